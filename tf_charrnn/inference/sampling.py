"""Text generation: pure, seeded sampling strategies on logits, and the generation loop on the model's
`step` (compiled as one loop, or streamed a character at a time).

Random draws use stateless ops keyed by (seed, step), so the same seed gives the same text.
"""

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

import tensorflow as tf
from absl import logging

from tf_charrnn.config import SAMPLING_MODES, ModelConfig
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.inference import sample_text
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout

# The most characters `Sampler.stream` generates in one compiled call before yielding them.
STREAM_CHUNK = 32


class Decoding(NamedTuple):
    """How each next character is chosen: one object through the generation loop (a NamedTuple, so that a
    tf.function takes it whole; `sampling` stays a Python string, the numbers may be tensors).

    Attributes:
      sampling: "sample" (weighted random), "greedy" (argmax), or "sample_at_space" (random only right
        after a space, argmax otherwise, as in TF1 char-rnn).
      seed: with the position in the text, keys the stateless draw.
      temperature, top_k, top_p: see `filter_logits`.
    """

    sampling: str = "sample"
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def of(cls, options: Any) -> "Decoding":
        """The Decoding of an object with these fields (a SampleConfig)."""
        return cls(*(getattr(options, field) for field in cls._fields))

    def as_tensors(self) -> "Decoding":
        """The numbers as tensors, so that a tf.function is traced once for all their values."""
        return self._replace(
            seed=tf.cast(self.seed, tf.int64),
            temperature=tf.cast(self.temperature, tf.float32),
            top_k=tf.cast(self.top_k, tf.int32),
            top_p=tf.cast(self.top_p, tf.float32),
        )


def filter_logits(
    logits: tf.Tensor,
    temperature: float | tf.Tensor = 1.0,
    top_k: int | tf.Tensor = 0,
    top_p: float | tf.Tensor = 1.0,
) -> tf.Tensor:
    """Scales logits by 1/temperature and masks all but the top-k / top-p (nucleus) choices.

    Args:
      logits: float [B, V].
      temperature: > 0; below 1 sharpens, above 1 flattens.
      top_k: keep the k highest logits per row (and ties with the k-th); 0 keeps all.
      top_p: keep the smallest set of highest-probability ids whose mass reaches top_p; 1 keeps all.

    Returns:
      float32 [B, V] logits, masked entries set to -inf.
    """
    logits = tf.cast(logits, tf.float32) / temperature
    neg_inf = tf.fill(tf.shape(logits), float("-inf"))
    vocab_size = tf.shape(logits)[-1]
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab_size), vocab_size)
    kth_largest = tf.math.top_k(logits, k=k).values[:, -1:]
    logits = tf.where(logits < kth_largest, neg_inf, logits)
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    mass_before = tf.cumsum(tf.nn.softmax(sorted_logits, axis=-1), axis=-1, exclusive=True)
    # Ids whose preceding probability mass is still below top_p are kept; ties with the last kept stay.
    num_kept = tf.reduce_sum(tf.cast(mass_before < top_p, tf.int32), axis=-1, keepdims=True)
    lowest_kept = tf.gather(sorted_logits, tf.maximum(num_kept, 1) - 1, batch_dims=1)
    return tf.where((top_p < 1.0) & (logits < lowest_kept), neg_inf, logits)


def choose_next(
    logits: tf.Tensor,
    step: int | tf.Tensor,
    decoding: Decoding,
    previous_ids: tf.Tensor | None = None,
    space_id: int | tf.Tensor = -1,
) -> tf.Tensor:
    """Picks the next id of every row.

    Args:
      logits: float [B, V] scores for the next character.
      step: int position in the generated text; with `decoding.seed` it keys the stateless draw.
      decoding: a Decoding.
      previous_ids: int32 [B] ids just emitted (used by sample_at_space).
      space_id: the id of " " in the vocabulary, -1 if absent.

    Returns:
      int32 [B] ids.
    """
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    if decoding.sampling == "greedy":
        return greedy
    # Most draws filter nothing; skipping the sorts then leaves the same logits at a fraction of the cost.
    temperature, top_k, top_p = decoding.temperature, decoding.top_k, decoding.top_p
    filtered = tf.cond(
        (tf.convert_to_tensor(top_k) > 0) | (tf.convert_to_tensor(top_p) < 1.0),
        lambda: filter_logits(logits, temperature, top_k, top_p),
        lambda: tf.cast(logits, tf.float32) / temperature,
    )
    draw_seed = tf.stack([tf.cast(decoding.seed, tf.int64), tf.cast(step, tf.int64)])
    sampled = tf.cast(tf.random.stateless_categorical(filtered, 1, seed=draw_seed)[:, 0], tf.int32)
    if decoding.sampling == "sample":
        return sampled
    if decoding.sampling == "sample_at_space":
        return tf.where(tf.equal(previous_ids, space_id), sampled, greedy)
    raise ValueError(f"unknown sampling {decoding.sampling!r}; use one of {', '.join(SAMPLING_MODES)}")


def feed_prime(
    model: CharRNN, prime_ids: tf.Tensor, weights: dict[str, Any] | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Runs the prime through the model's step from a zero state; traceable.

    Args:
      model: CharRNN.
      prime_ids: int32 [B, P], P >= 1.
      weights: `model.step_weights()`; None reads them here.

    Returns:
      (logits float32 [B, V] after the last prime character, state float32 [L, S, B, H]).
    """
    weights = weights or model.step_weights()
    state = model.loop_state(model.initial_state(tf.shape(prime_ids)[0]), weights)
    logits, state = model.step(prime_ids[:, 0], state, weights)

    def feed(position: tf.Tensor, logits: tf.Tensor, state: Any) -> tuple[tf.Tensor, tf.Tensor, Any]:
        return position + 1, *model.step(prime_ids[:, position], state, weights)

    _, logits, state = tf.while_loop(
        lambda position, *_: position < tf.shape(prime_ids)[1], feed, (tf.constant(1), logits, state)
    )
    return logits, model.caller_state(state)


def generate_ids(
    model: CharRNN,
    prime_ids: tf.Tensor,
    length: int | tf.Tensor,
    decoding: Decoding,
    space_id: int | tf.Tensor = -1,
    stop_ids: tf.Tensor | None = None,
    step_precision: str = "float32",
) -> tf.Tensor:
    """Feeds the prime, then samples `length` ids; traceable, so one tf.function runs it all.

    Args:
      model: CharRNN.
      prime_ids: int32 [B, P], P >= 1.
      length: int32 scalar, characters to generate.
      decoding, space_id: see `choose_next`.
      stop_ids: int32 [K]: a row stops after the first K ids it generates that equal these (the prime
        does not count); None or K = 0: no row stops early (None traces a loop without the test).

    Returns:
      int32 [B, N]: N = length, or fewer when every row has stopped (the loop then ends); the ids a
      row generates after its stop are -1.
    """
    weights = model.step_weights(step_precision)
    logits, state = feed_prime(model, prime_ids, weights)
    previous = prime_ids[:, -1]
    if stop_ids is None:  # decided when traced: the loop holds no stop test (a dozen ops a character)
        ids, _, _, _ = sample_steps(model, logits, state, previous, 0, length, weights, decoding, space_id)
        return _rows(ids)
    stop_ids = tf.convert_to_tensor(stop_ids, tf.int32)
    stopping = tf.size(stop_ids) > 0

    def draw(
        step: tf.Tensor,
        previous: tf.Tensor,
        logits: tf.Tensor,
        state: Any,
        generated: tf.TensorArray,
        recent: tf.Tensor,
        lengths: tf.Tensor,
    ) -> tuple:
        previous = choose_next(logits, step, decoding, previous, space_id)
        generated = generated.write(step, previous)
        recent = tf.concat([recent, previous[:, None]], axis=1)[:, 1:]
        matched = stopping & tf.reduce_all(tf.equal(recent, stop_ids[None, :]), axis=1)
        lengths = tf.where(matched & (lengths == length), step + 1, lengths)
        # The step after the last draw runs too, unused, as in `sample_steps`.
        return step + 1, previous, *model.step(previous, state, weights), generated, recent, lengths

    def some_row_going(step: tf.Tensor, *loop_vars: Any) -> tf.Tensor:
        lengths = loop_vars[-1]
        return (step < length) & tf.reduce_any(lengths > step)

    _, _, _, _, generated, _, lengths = tf.while_loop(
        some_row_going,
        draw,
        (
            tf.constant(0),
            previous,
            logits,
            model.loop_state(state, weights),
            tf.TensorArray(tf.int32, size=0, dynamic_size=True),
            tf.fill([tf.shape(prime_ids)[0], tf.size(stop_ids)], -1),  # each row's last K ids
            tf.fill([tf.shape(prime_ids)[0]], length),  # where each row stops
        ),
    )
    ids = _rows(generated.stack())
    return tf.where(tf.range(tf.shape(ids)[1])[None, :] < lengths[:, None], ids, -1)


def sample_steps(
    model: CharRNN,
    logits: tf.Tensor,
    state: tf.Tensor,
    previous: tf.Tensor,
    first_step: int | tf.Tensor,
    count: int | tf.Tensor,
    weights: dict[str, Any],
    decoding: Decoding,
    space_id: int | tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Draws `count` characters from position `first_step` on, each fed back through the model's step;
    traceable.

    Args:
      model: CharRNN.
      logits, state: the model's float32 logits [B, V] and state [L, S, B, H] before the first draw.
      previous: int32 [B] ids just emitted (the prime's last before the first draw).
      first_step, count: int32 scalars: the position of the first draw in the text, and the draws.
      weights: `model.step_weights(...)`.
      decoding, space_id: see `choose_next`.

    Returns:
      (ids int32 [count, B], and the logits, state and ids after the last draw).
    """

    def draw(
        offset: tf.Tensor, ids: tf.TensorArray, logits: tf.Tensor, state: Any, previous: tf.Tensor
    ) -> tuple:
        previous = choose_next(logits, first_step + offset, decoding, previous, space_id)
        return offset + 1, ids.write(offset, previous), *model.step(previous, state, weights), previous

    _, ids, logits, state, previous = tf.while_loop(
        lambda offset, *_: offset < count,
        draw,
        (
            tf.constant(0),
            tf.TensorArray(tf.int32, size=count),
            logits,
            model.loop_state(state, weights),
            previous,
        ),
    )
    return ids.stack(), logits, model.caller_state(state), previous


def _rows(ids: tf.Tensor) -> tf.Tensor:
    """The generated ids [N, B] as rows [B, N]."""
    # An int32 Transpose in a graph makes oneDNN log a spurious error line, Einsum not.
    return tf.einsum("nb->bn", ids)


class Sampler:
    """Generates text from a Char-RNN's weights: one compiled loop, or streamed a character at a time.

    Both paths run the model's step and the same seeded draws, so they give the same text.

    Args:
      model_config: ModelConfig of the weights to load into `self.model` (batch 1; `step` takes any).
      fused_kernels: the model steps its LSTM layers on the fused kernel (the runtime decides).
      step_precision: of the weights each step reads: "float32", "bfloat16" or "int8" (the step kernel's
        weights in that precision: faster, and texts no longer those of the float32 step or the
        SavedModel); where the kernel cannot take them, float32 (`self.model.step_implementation` says
        which runs, and the log why the kernel does not).
    """

    def __init__(
        self, model_config: ModelConfig, fused_kernels: bool = False, step_precision: str = "float32"
    ) -> None:
        self.model = CharRNN(model_config, batch_size=1, fused_kernels=fused_kernels)
        missing = self.model.recurrent_layers[0].step_kernel_missing(step_precision)
        if missing is not None:  # why each character steps on other ops than the kernel asked for
            logging.info(
                "%s step weights need %s; the step runs on %s in float32",
                step_precision,
                missing,
                self.model.step_implementation(step_precision),
            )
        self._compiled_generate = tf.function(
            functools.partial(generate_ids, self.model, step_precision=step_precision), autograph=False
        )
        self._compiled_prime = tf.function(functools.partial(feed_prime, self.model), autograph=False)
        self._compiled_step_weights = tf.function(
            functools.partial(self.model.step_weights, step_precision), autograph=False
        )
        self._compiled_steps = tf.function(functools.partial(sample_steps, self.model), autograph=False)

    @staticmethod
    def _prime_ids(vocab: Vocab, prime: str, num_samples: int, stop_at: str) -> tf.Tensor:
        """The prime's ids, one row per sample, once the prime and `stop_at` are checked."""
        sample_text.check_prime(vocab, prime, stop_at)
        return tf.tile(vocab.encode(prime)[None, :], [num_samples, 1])

    def generate(
        self,
        vocab: Vocab,
        prime: str,
        length: int,
        decoding: Decoding | None = None,
        num_samples: int = 1,
        stop_at: str = "",
    ) -> list[str]:
        """Generates `num_samples` continuations of `prime` in one compiled call.

        Args:
          vocab: the run's Vocab.
          prime: text that sets the state (characters of `vocab`, at least one).
          length: the most characters generated per sample.
          decoding: a Decoding (see `choose_next`); None: Decoding()'s defaults.
          num_samples: texts generated at once, as one batch.
          stop_at: each text ends after the first occurrence of this string in what it generates (the
            prime does not count), the string included; "": every text has `length` characters.

        Returns:
          A list of `num_samples` strings, without the prime.
        Raises:
          UserError: `prime` is empty, or `prime` or `stop_at` has characters outside `vocab`.
        """
        prime_ids = self._prime_ids(vocab, prime, num_samples, stop_at)
        ids = self._compiled_generate(
            prime_ids,
            tf.constant(length, tf.int32),
            (decoding or Decoding()).as_tensors(),
            tf.constant(vocab.space_id),
            stop_ids=tf.constant(vocab.encode(stop_at), tf.int32) if stop_at else None,
        )
        return [vocab.decode(row[row >= 0]) for row in ids.numpy()]

    def stream(
        self,
        vocab: Vocab,
        prime: str,
        length: int,
        decoding: Decoding | None = None,
        num_samples: int = 1,
        stop_at: str = "",
    ) -> Iterator[list[str]]:
        """Yields the generated characters one step at a time: a list of `num_samples` strings per step,
        "" for a sample that has stopped (see `generate`, whose texts these steps spell out); ends when
        every sample has `length` characters or has stopped. The steps run in compiled calls of 1, 2, 4,
        ... up to STREAM_CHUNK characters (a call costs about what 3 to 7 steps of a 2 x 512 model do),
        each call's characters yielded one by one."""
        prime_ids = self._prime_ids(vocab, prime, num_samples, stop_at)
        decoding, space_id = (decoding or Decoding()).as_tensors(), tf.constant(vocab.space_id)
        weights = self._compiled_step_weights()
        logits, state = self._compiled_prime(prime_ids, weights)
        previous = prime_ids[:, -1]
        tails = [""] * num_samples  # each sample's last len(stop_at) characters
        stopped = [False] * num_samples
        step, chunk = 0, 1
        while step < length:
            count = min(chunk, length - step)
            ids, logits, state, previous = self._compiled_steps(
                logits, state, previous, tf.constant(step), tf.constant(count), weights, decoding, space_id
            )
            for row in ids.numpy():
                chars = [vocab.chars[i] if not done else "" for i, done in zip(row, stopped, strict=True)]
                yield chars
                if stop_at:
                    tails = [(tail + char)[-len(stop_at) :] for tail, char in zip(tails, chars, strict=True)]
                    stopped = [done or tail == stop_at for done, tail in zip(stopped, tails, strict=True)]
                    if all(stopped):
                        return
            step, chunk = step + count, min(2 * chunk, STREAM_CHUNK)


def load_sampler(
    train_dir: str,
    checkpoint: str | None = None,
    best: bool = False,
    fused_kernels: bool = False,
    step_precision: str = "float32",
) -> tuple["Sampler", Vocab]:
    """A Sampler holding a run's weights (its latest, best-validation or named checkpoint); see Sampler
    for `fused_kernels` and `step_precision`.

    Returns:
      (Sampler, Vocab).
    """
    config, vocab = layout.load_run(train_dir)
    sampler = Sampler(config.model, fused_kernels, step_precision)
    checkpoints.restore_weights(train_dir, sampler.model, checkpoint, best)
    return sampler, vocab
