"""Scores a trained run's checkpoint on a text: nats, bits and perplexity per character, computed in one
stateful pass over the text's streams, exactly as training's validation does, or over pieces of a few
characters, each from a zero state, as a short prime starts."""

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.data import corpus_files, encoded, pipeline, sources
from tf_charrnn.data.splits import num_stream_batches, split_corpus
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, flag
from tf_charrnn.model import losses
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import placement

_MAX_LISTED = 20  # unknown characters named in an error message


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_run` measured."""

    checkpoint: str  # the checkpoint prefix that was scored
    characters: int  # characters predicted (the stream layout leaves a short tail out, as training does)
    nats_per_char: float
    bits_per_char: float
    perplexity: float
    skipped_characters: int  # characters outside the vocabulary left out with skip_unknown


def stream_layout(num_ids: int, batch_size: int, seq_length: int) -> tuple[int, int, int]:
    """The stream layout of a text: the run's layout, or fewer streams when the text is too short for
    one batch of it (one stream of num_ids - 1 when even seq_length does not fit).

    Returns:
      (streams, seq_length, num_batches).
    Raises:
      UserError: fewer than 2 ids (nothing to predict).
    """
    if num_ids < 2:
        raise UserError(
            f"the text has {num_ids} character(s) to score; at least 2 are needed, pass a longer "
            f"{flag('data_path')}"
        )
    streams = min(batch_size, (num_ids - 1) // seq_length)
    if streams < 1:
        return 1, num_ids - 1, 1
    return streams, seq_length, num_stream_batches(num_ids, streams, seq_length)


def piece_layout(num_ids: int, batch_size: int, piece_length: int) -> tuple[int, int]:
    """The layout of a text cut into pieces of `piece_length` predicted characters, each scored from a
    zero state: (rows per batch, batches); pieces beyond the last full batch are left out.

    Raises:
      UserError: the text is too short for one piece.
    """
    pieces = (num_ids - 1) // piece_length
    if pieces < 1:
        raise UserError(
            f"the text has {num_ids} character(s); {flag('reset_every')}={piece_length} needs at least "
            f"{piece_length + 1}: pass a smaller {flag('reset_every')} or a longer text"
        )
    rows = min(batch_size, pieces)
    return rows, pieces // rows


def describe_chars(chars: Sequence[str]) -> str:
    """The first characters of a list, and how many more (for an error message)."""
    listed = repr(chars[:_MAX_LISTED])
    return listed if len(chars) <= _MAX_LISTED else f"{listed} and {len(chars) - _MAX_LISTED} more"


def _text_ids(data_path: str, separator: str, vocab: Vocab, skip_unknown: bool) -> tuple[np.ndarray, int]:
    """A --data_path text (a file, folder, glob or list, its files joined with `separator` as in
    training) as ids of the run's vocabulary, and the characters left out."""
    text = "".join(sources.read_corpus_chunks(corpus_files.list_corpus(data_path, separator)))
    unknown = vocab.unknown_chars(text)
    if unknown and not skip_unknown:
        raise UserError(
            f"{flag('data_path')} {data_path} has characters outside the run's vocabulary: "
            f"{describe_chars(unknown)}; pass {flag('skip_unknown')} to score the text without them"
        )
    kept = text.translate({ord(char): None for char in unknown}) if unknown else text
    return vocab.encode(kept, dtype=vocab.id_dtype), len(text) - len(kept)


def _held_out_ids(config: RunConfig, vocab: Vocab, train_dir: str, split: str) -> np.ndarray:
    """The run's own validation or test split, from its corpus (which must still have the run's
    vocabulary)."""
    fraction_name = "val_fraction" if split == "validation" else "test_fraction"
    if getattr(config.layout, fraction_name) <= 0:
        raise UserError(
            f"{train_dir} was trained without a {split} split ({flag(fraction_name)}=0); "
            f"pass {flag('data_path')}=FILE (or a folder) to score a text"
        )
    corpus = encoded.load_corpus(config.data, publish=False)
    recorded = config.data.corpus_sha256
    # A fine-tuned run's vocabulary holds its source's characters first: its corpus is encoded in it.
    fits = corpus.vocab == vocab or (
        config.directory.init_from and not vocab.unknown_chars(corpus.vocab.chars)
    )
    if not fits or (recorded and recorded != corpus.sha256):
        if corpus.pending is not None:
            corpus.pending.discard()
        raise UserError(
            f"the corpus of {train_dir} has changed since training (sha256 {recorded or 'not recorded'}, "
            f"now {corpus.sha256}); pass {flag('data_path')}=FILE (or a folder) to score a text"
        )
    splits = split_corpus(encoded.in_vocab(corpus, vocab, config.data), config.layout)
    splits.publish_cache()
    return splits.val_ids if split == "validation" else splits.test_ids


def read_ids(
    config: RunConfig,
    vocab: Vocab,
    train_dir: str,
    data_path: str = "",
    skip_unknown: bool = False,
    split: str = "validation",
) -> tuple[np.ndarray, int]:
    """The ids of a --data_path text in the run's vocabulary, or of one of the run's held-out splits.

    Args:
      config, vocab: the run's RunConfig and Vocab.
      train_dir: the run directory (named in messages).
      data_path: a file, folder, glob or comma-separated list; empty: the run's `split`.
      skip_unknown: leave out characters outside the vocabulary instead of raising.
      split: "validation" or "test", read when data_path is empty.

    Returns:
      (ids [N] of vocab.id_dtype, the number of characters left out).
    Raises:
      UserError: an unreadable text, unknown characters (without skip_unknown), no such split, or a
        corpus changed since training.
    """
    if data_path:
        return _text_ids(data_path, config.data.document_separator, vocab, skip_unknown)
    return _held_out_ids(config, vocab, train_dir, split), 0


def evaluate_run(
    train_dir: str,
    checkpoint: str = "",
    best: bool = False,
    data_path: str = "",
    skip_unknown: bool = False,
    split: str = "validation",
    reset_every: int = 0,
    step_precision: str = "none",
) -> Evaluation:
    """Scores a run's checkpoint on a text, batched in streams as training's validation is (or in pieces
    of `reset_every` characters, each from a zero state).

    Args:
      train_dir: the run directory.
      checkpoint: the checkpoint prefix to score; empty: the latest (or the best with `best`).
      best: score the best-validation checkpoint.
      data_path: a UTF-8 text file, a folder of them, a glob or a comma-separated list (joined with the
        run's --document_separator, as training joins them); empty: the run's own `split`.
      skip_unknown: leave out characters outside the run's vocabulary instead of raising.
      split: "validation" or "test" (the run's --test_fraction at the corpus's end), without data_path.
      reset_every: > 0: score pieces of this many characters, each from a zero state (`piece_layout`).
      step_precision: "none": the sequence pass training validates with; "float32", "bfloat16" or "int8":
        the sampler's one-character step on weights in that precision (`StreamScorer`).

    Returns:
      Evaluation: the mean of the per-batch mean losses (what training logs as its val loss).
    Raises:
      UserError: no run or checkpoint, an unreadable or too short text, or unknown characters.
    """
    config, vocab = layout.load_run(train_dir)
    # Before the text: a run without checkpoints fails at once, not after reading (or downloading) a corpus.
    path = checkpoints.find_checkpoint(train_dir, checkpoint or None, best)
    ids, skipped = read_ids(config, vocab, train_dir, data_path, skip_unknown, split)
    if reset_every:
        streams, _ = piece_layout(len(ids), config.layout.batch_size, reset_every)
    else:
        streams, _, _ = stream_layout(len(ids), config.layout.batch_size, config.layout.seq_length)
    scorer = StreamScorer(config, streams, step_precision)
    path = checkpoints.restore_weights(train_dir, scorer.model, path, best)
    if reset_every:
        return scorer.piece_evaluation(ids, reset_every, path, skipped)
    return scorer.evaluation(ids, path, skipped)


class StreamScorer:
    """A run's model with `streams` rows, on the runtime the scripts choose, and the stateful loss pass
    training's validation makes, or the sampler's one-character step; load its weights into `self.model`.

    Args:
      config: the run's RunConfig.
      streams: the rows of the stream layout it scores (see `stream_layout`).
      step_precision: "none": the sequence pass; "float32", "bfloat16" or "int8": each character through
        `CharRNN.step` on weights in that precision, as the sampler steps (float32 where that precision's
        step cannot run: `self.model.step_implementation` says what runs).
    """

    def __init__(self, config: RunConfig, streams: int, step_precision: str = "none") -> None:
        self.config = config
        self.streams = streams
        self.step_precision = step_precision
        self.model = CharRNN(
            config.model,
            batch_size=streams,
            dtype_policy=placement.dtype_policy(config.precision.mixed_precision),
            fused_kernels=placement.fused_kernels_apply(),
        )
        self._sequence_loss = tf.function(
            lambda inputs, targets: losses.sequence_loss(targets, self.model(inputs, training=False))
        )
        self._step_loss = tf.function(self._stepped_loss)
        self._step_weights = tf.function(lambda: self.model.step_weights(self.step_precision))
        self._weights: dict | None = None  # the step's weights, packed once per text scored
        self._state: tf.Tensor | None = None

    def _stepped_loss(
        self, inputs: tf.Tensor, targets: tf.Tensor, state: tf.Tensor, weights: dict
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The mean loss of [B, T] `inputs` -> `targets` stepped one character at a time from `state` on
        the step's `weights`, and the state after them."""
        total = tf.constant(0.0)
        state = self.model.loop_state(state, weights)
        for position in tf.range(tf.shape(inputs)[1]):
            logits, state = self.model.step(inputs[:, position], state, weights)
            total += losses.sequence_loss(targets[:, position], logits)
        return total / tf.cast(tf.shape(inputs)[1], tf.float32), self.model.caller_state(state)

    def _reset(self) -> None:
        """Zero state for the next text or piece."""
        self.model.reset_state()
        self._state = self.model.initial_state(self.streams)

    def _pack_step_weights(self) -> None:
        """Packs (and rounds) the step's weights from the model's current ones, once per text scored."""
        self._weights = self._step_weights() if self.step_precision != "none" else None

    def _loss(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """The mean loss of one batch, the state carried on from the last."""
        if self.step_precision == "none":
            return self._sequence_loss(inputs, targets)
        loss, self._state = self._step_loss(inputs, targets, self._state, self._weights)
        return loss

    def evaluation(self, ids: np.ndarray, checkpoint: str, skipped_characters: int = 0) -> Evaluation:
        """Scores `ids` (of the run's vocabulary), in `stream_layout`; an Evaluation naming `checkpoint`."""
        streams, seq_length, num_batches = stream_layout(
            len(ids), self.config.layout.batch_size, self.config.layout.seq_length
        )
        self._pack_step_weights()
        self._reset()
        total = 0.0
        for inputs, targets in pipeline.stream_dataset(np.asarray(ids), streams, seq_length, num_batches):
            total += float(self._loss(inputs, targets))
        return _evaluation(
            checkpoint, total / num_batches, streams * seq_length * num_batches, skipped_characters
        )

    def piece_evaluation(
        self, ids: np.ndarray, piece_length: int, checkpoint: str, skipped_characters: int = 0
    ) -> Evaluation:
        """Scores `ids` cut into pieces of `piece_length` predicted characters (`piece_layout`), each
        from a zero state; an Evaluation naming `checkpoint`."""
        rows, num_batches = piece_layout(len(ids), self.config.layout.batch_size, piece_length)
        count = rows * num_batches
        ids = np.asarray(ids, np.int32)
        inputs = ids[: count * piece_length].reshape(count, piece_length)
        targets = ids[1 : count * piece_length + 1].reshape(count, piece_length)
        self._pack_step_weights()
        total = 0.0
        for batch in range(num_batches):
            self._reset()
            rows_of_batch = slice(batch * rows, (batch + 1) * rows)
            total += float(
                self._loss(tf.constant(inputs[rows_of_batch]), tf.constant(targets[rows_of_batch]))
            )
        return _evaluation(checkpoint, total / num_batches, count * piece_length, skipped_characters)


def _evaluation(checkpoint: str, nats: float, characters: int, skipped_characters: int) -> Evaluation:
    return Evaluation(
        checkpoint=checkpoint,
        characters=characters,
        nats_per_char=nats,
        bits_per_char=losses.bits_per_char(nats),
        perplexity=losses.perplexity(nats),
        skipped_characters=skipped_characters,
    )
