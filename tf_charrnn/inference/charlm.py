"""`CharLM`: a trained run loaded for use from Python (a notebook, a script), on the runtime the scripts
choose: generate, stream, score a text, and the next characters' probabilities."""

import functools
import os
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from tf_charrnn import errors
from tf_charrnn.config import STEP_PRECISIONS, RunConfig, SampleConfig, python_settings
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError
from tf_charrnn.inference import activations, sampling, scored_text, scoring
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import placement


class CharLM:
    """A trained Char-RNN: its weights, vocabulary and config, ready to generate and score text.

    Load one with `CharLM.from_run(train_dir)`. It runs where `scripts/sample.py` runs (the fused C++
    LSTM kernels on a CPU, cuDNN on a GPU), gives the same text for the same seed and settings, and
    scores a text as `scripts/evaluate.py` does. Bad arguments raise `tf_charrnn.UserError`, its message
    naming the argument (`prime=`).

    Attributes:
      vocab: the run's `Vocab` (`vocab.chars`: the characters, in id order).
      config: the run's `RunConfig` (e.g. `config.model.rnn_units`).
      model: the Keras model holding the weights (`CharRNN`, batch 1; its `step` takes any batch).
      checkpoint: the checkpoint prefix the weights came from.
      train_dir: the run directory.

    Examples:

    Generate text.
    ```python
    lm = tf_charrnn.CharLM.from_run("runs/shakespeare_cpu")
    print(lm.generate("ROMEO:", length=200, temperature=0.8, seed=7))

    # Three samples at once, as one batch.
    lm.generate("ROMEO:", length=100, num_samples=3, seed=7)
    ```

    Print characters as they come.
    ```python
    for piece in lm.stream("ROMEO:", length=200, seed=7):
        print(piece, end="", flush=True)
    ```

    Look inside: every layer's states and gates after each character.
    ```python
    lm.activations("To be, or not to be")["lstm_1/c"].shape  # (19, 512)
    ```

    Score a text, and ask what comes next.
    ```python
    lm.score("To be, or not to be, that is the question.").bits_per_char
    lm.next_chars("To be, or not to b", k=3)  # [("e", 0.97...), ...]
    ```
    """

    def __init__(
        self, train_dir: str, config: RunConfig, vocab: Vocab, sampler: sampling.Sampler, checkpoint: str
    ) -> None:
        self.train_dir = train_dir
        self.config = config
        self.vocab = vocab
        self.model = sampler.model
        self.checkpoint = checkpoint
        self._sampler = sampler
        self._feed = tf.function(functools.partial(sampling.feed_prime, self.model), autograph=False)
        self._scorers: dict[
            int, scoring.StreamScorer
        ] = {}  # stream rows -> scoring.StreamScorer holding these weights

    @classmethod
    def from_run(
        cls,
        train_dir: str | os.PathLike,
        best: bool = False,
        checkpoint: str | os.PathLike | None = None,
        step_precision: str = "float32",
    ) -> "CharLM":
        """Loads a run directory's latest checkpoint (or its best-validation one, or a named one).

        Args:
          train_dir: the run directory (what `tf_charrnn.train` or `scripts/train.py` wrote).
          best: load the best-validation checkpoint instead of the latest.
          checkpoint: a checkpoint prefix to load, e.g. "runs/x/checkpoints/ckpt-300"; None: the latest
            (or the best with `best`).
          step_precision: of the weights `generate` and `stream` step on: "float32", "bfloat16" (faster
            at batch 1 where the CPU has AVX512-BF16) or "int8" (the fastest, where it has AVX512-VNNI);
            `sample.py --step_precision`, `evaluate.py --step_precision` for what each costs.

        Returns:
          CharLM.
        Raises:
          UserError: the folder holds no run or no such checkpoint, or its files are damaged.

        Example:
        ```python
        lm = tf_charrnn.CharLM.from_run("runs/shakespeare_cpu", best=True)
        lm.config.model.rnn_units  # 512
        ```
        """
        with errors.python_arguments():
            _check_types(
                train_dir=(train_dir, (str, os.PathLike)),
                best=(best, bool),
                checkpoint=(checkpoint, (str, os.PathLike, type(None))),
                step_precision=(step_precision, str),
            )
            if step_precision not in STEP_PRECISIONS:
                raise UserError(
                    f"step_precision= must be one of {', '.join(STEP_PRECISIONS)}, got {step_precision!r}"
                )
            train_dir, checkpoint = os.fspath(train_dir), os.fspath(checkpoint) if checkpoint else None
            config, vocab = layout.load_run(train_dir)
            path = checkpoints.find_checkpoint(train_dir, checkpoint or None, best)
            placement.grow_gpu_memory()
            sampler = sampling.Sampler(
                config.model, fused_kernels=placement.fused_kernels_apply(), step_precision=step_precision
            )
            path = checkpoints.restore_weights(train_dir, sampler.model, path, best)
        return cls(train_dir, config, vocab, sampler, path)

    def __repr__(self) -> str:
        model = self.config.model
        return (
            f"CharLM({self.checkpoint!r}: {model.num_layers} x {model.rnn_units} {model.cell}, "
            f"{len(self.vocab)} characters)"
        )

    def _sample_options(self, arguments: dict[str, Any]) -> SampleConfig:
        """The checked SampleConfig of a generating method's arguments (its `locals()`, named as
        SampleConfig's fields)."""
        settings = {name: value for name, value in arguments.items() if name != "self"}
        with errors.python_arguments():
            return SampleConfig(train_dir=self.train_dir, **python_settings(SampleConfig, settings))

    def generate(
        self,
        prime: str = "\n",
        length: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        sampling: str = "sample",
        seed: int = 0,
        num_samples: int = 1,
        stop_at: str = "",
    ) -> str | list[str]:
        """Generates text after `prime`: the same text `scripts/sample.py` prints for the same settings.

        Args:
          prime: text that sets the state before generating (at least one character of the vocabulary).
          length: characters to generate after it.
          temperature: divide the logits by this; < 1 is more conservative.
          top_k: sample among the k most likely characters; 0: all.
          top_p: sample among the most likely characters holding this probability mass; 1: all.
          sampling: "sample" (weighted random), "greedy" (argmax) or "sample_at_space" (random only
            after a space).
          seed: the same seed gives the same text.
          num_samples: texts generated at once, as one batch.
          stop_at: each text ends after the first occurrence of this string in what it generates (the
            prime does not count), the string included; "": every text has `length` characters.

        Returns:
          `prime` followed by the generated text; a list of `num_samples` such strings when it is > 1.
        Raises:
          UserError: a bad argument (named in the message, e.g. `prime=` with unknown characters).

        Example:
        ```python
        lm.generate("ROMEO:", length=100, temperature=0.8, seed=7)
        ```
        """
        options = self._sample_options(locals())
        with errors.python_arguments():
            texts = self._sampler.generate(self.vocab, options.prime, options.length, **_draws(options))
        texts = [options.prime + text for text in texts]
        return texts if options.num_samples > 1 else texts[0]

    def stream(
        self,
        prime: str = "\n",
        length: int = 500,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        sampling: str = "sample",
        seed: int = 0,
        num_samples: int = 1,
        stop_at: str = "",
    ) -> Iterator[str | list[str]]:
        """Generates text a character at a time, as `generate` would (the same seed, the same text).

        Args: as `generate`.

        Yields:
          `prime`, then each generated character: strings whose concatenation is what `generate`
          returns; with `num_samples` > 1, lists of `num_samples` strings ("" for a sample that has
          met `stop_at`).
        Raises:
          UserError: a bad argument, when the first piece is asked for.

        Example:
        ```python
        for piece in lm.stream("ROMEO:", length=200, seed=7):
            print(piece, end="", flush=True)
        ```
        """
        options = self._sample_options(locals())
        several = options.num_samples > 1
        with errors.python_arguments():
            steps = self._sampler.stream(self.vocab, options.prime, options.length, **_draws(options))
            first = next(steps, None)  # checks the prime before anything is yielded
        yield [options.prime] * options.num_samples if several else options.prime
        if first is None:
            return
        yield first if several else first[0]
        for chars in steps:
            yield chars if several else chars[0]

    def score(self, text: str, skip_unknown: bool = False) -> scoring.Evaluation:
        """How well the model predicts `text`: what `scripts/evaluate.py --data_path` prints for a file
        holding it (the text is cut into the run's streams of seq_length characters, as validation is).

        Args:
          text: the text (at least 2 characters).
          skip_unknown: leave out characters outside the vocabulary instead of raising.

        Returns:
          scoring.Evaluation: nats_per_char, bits_per_char, perplexity, characters (predicted), and
          skipped_characters, checkpoint.
        Raises:
          UserError: characters outside the vocabulary (without `skip_unknown`), or a text too short.

        Example:
        ```python
        score = lm.score("To be, or not to be, that is the question.")
        score.bits_per_char, score.perplexity
        ```
        """
        _check_types(text=(text, str), skip_unknown=(skip_unknown, bool))
        unknown = self.vocab.unknown_chars(text)
        if unknown and not skip_unknown:
            raise UserError(
                f"text= has characters outside the run's vocabulary: {scored_text.describe_chars(unknown)}; "
                f"pass skip_unknown=True to score the text without them"
            )
        kept = text.translate({ord(char): None for char in unknown}) if unknown else text
        if len(kept) < 2:
            raise UserError(f"text= has {len(kept)} character(s) to score; at least 2 are needed")
        ids = self.vocab.encode(kept)
        streams, _, _ = scored_text.stream_layout(
            len(ids), self.config.layout.batch_size, self.config.layout.seq_length
        )
        if streams not in self._scorers:
            scorer = scoring.StreamScorer(self.config, streams)
            scorer.model.copy_weights_from(self.model)
            self._scorers[streams] = scorer
        return self._scorers[streams].evaluation(ids, self.checkpoint, len(text) - len(kept))

    def activations(
        self, text: str, skip_unknown: bool = False, streams: int | None = None
    ) -> activations.Activations:
        """What the recurrent layers hold after each character of `text`: every layer's hidden state, cell
        state (LSTM) and gate values (LSTM: input, forget, output, candidate; GRU: update, reset,
        candidate), recomputed in float32 from the weights, so every implementation of the run (fused
        kernels, bfloat16, Keras ops) gives the same values.

        Args:
          text: the text (at least 1 character).
          skip_unknown: leave out characters outside the vocabulary instead of raising.
          streams: cut the text into this many contiguous streams, each from a zero state, run side by
            side; None: as training cuts its text (the run's batch size, fewer for a short text, each
            stream at least seq_length characters); 1: one pass from a zero state.

        Returns:
          activations.Activations: `result["lstm_1/c"]` is float32 [N, H], row t the value after
          `result.text[t]`; `result.arrays` holds them all, named "LAYER/KIND".
        Raises:
          UserError: an empty text, characters outside the vocabulary (without `skip_unknown`), or
            streams < 1.

        Example:
        ```python
        found = lm.activations("To be, or not to be")
        found["lstm_2/c"][:, 5]  # cell 5's value after each character
        ```
        """
        _check_types(
            text=(text, str), skip_unknown=(skip_unknown, bool), streams=(streams, (int, type(None)))
        )
        if streams is not None and streams < 1:
            raise UserError(f"streams= must be >= 1 (or None), got {streams}")
        unknown = self.vocab.unknown_chars(text)
        if unknown and not skip_unknown:
            raise UserError(
                f"text= has characters outside the run's vocabulary: {scored_text.describe_chars(unknown)}; "
                f"pass skip_unknown=True to leave them out"
            )
        kept = text.translate({ord(char): None for char in unknown}) if unknown else text
        if not kept:
            raise UserError("text= must hold at least one character of the vocabulary")
        layout = self.config.layout
        if streams is None:
            streams = activations.stream_count(len(kept), layout.batch_size, layout.seq_length)
        return activations.compute_activations(self.model, self.vocab.encode(kept), kept, streams)

    def next_chars(self, text: str, k: int = 5) -> list[tuple[str, float]]:
        """The k most likely characters to follow `text`, with their probabilities.

        Args:
          text: at least one character of the vocabulary.
          k: how many characters (all of them when k is at least the vocabulary's size).

        Returns:
          [(character, probability), ...], most likely first (the softmax of the model's logits after
          the last character of `text`, at temperature 1).
        Raises:
          UserError: an empty `text`, characters outside the vocabulary, or k < 1.

        Example:
        ```python
        lm.next_chars("To be, or not to b", k=3)
        ```
        """
        _check_types(text=(text, str), k=(k, int))
        if k < 1:
            raise UserError(f"k= must be >= 1, got {k}")
        if not text:
            raise UserError("text= must hold at least one character")
        unknown = self.vocab.unknown_chars(text)
        if unknown:
            raise UserError(
                f"text= has characters outside the run's vocabulary: {scored_text.describe_chars(unknown)}"
            )
        logits, _ = self._feed(tf.constant(self.vocab.encode(text)[None, :]))
        probabilities = tf.nn.softmax(logits[0]).numpy()
        order = probabilities.argsort(kind="stable")[::-1][:k]
        return [(self.vocab.chars[i], float(probabilities[i])) for i in order]


def _draws(options: SampleConfig) -> dict[str, Any]:
    """Sampler keyword arguments of a SampleConfig."""
    return dict(
        decoding=sampling.Decoding.of(options), num_samples=options.num_samples, stop_at=options.stop_at
    )


def _check_types(**arguments: tuple[Any, type | tuple[type, ...]]) -> None:
    """Raises UserError naming the first argument whose value is not of its type(s): name=(value, types)."""
    for name, (value, kinds) in arguments.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = {type(None): "None", os.PathLike: "a path"}
            expected = " or ".join(names.get(kind, kind.__name__) for kind in kinds)
            raise UserError(f"{name}= must be {expected}, got {value!r}")
