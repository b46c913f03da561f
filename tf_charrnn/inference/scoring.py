"""Scores a trained run's checkpoint on a text: nats, bits and perplexity per character, computed in one
stateful pass over the text's streams, exactly as training's validation does, or over pieces of a few
characters, each from a zero state, as a short prime starts."""

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.data import pipeline
from tf_charrnn.inference.scored_text import ScoredText, piece_layout, read_scored, stream_layout
from tf_charrnn.model import losses
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout
from tf_charrnn.runtime import placement


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_run` measured."""

    checkpoint: str  # the checkpoint prefix that was scored
    characters: int  # characters predicted (the stream layout leaves a short tail out, as training does)
    nats_per_char: float
    bits_per_char: float
    perplexity: float
    skipped_characters: int  # characters outside the vocabulary left out with skip_unknown


def evaluate_run(
    train_dir: str,
    checkpoint: str = "",
    best: bool = False,
    data_path: str = "",
    skip_unknown: bool = False,
    split: str = "validation",
    reset_every: int = 0,
    step_precision: str = "none",
    text: ScoredText | None = None,
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
      text: what `scored_text.read_scored` read for these arguments before TensorFlow loaded (evaluate.py's
        way); None: read here.

    Returns:
      Evaluation: the mean of the per-batch mean losses (what training logs as its val loss).
    Raises:
      UserError: no run or checkpoint, an unreadable or too short text, or unknown characters.
    """
    config, vocab = layout.load_run(train_dir)
    # Before the text: a run without checkpoints fails at once, not after reading (or downloading) a corpus.
    path = checkpoints.find_checkpoint(train_dir, checkpoint or None, best)
    if text is None:
        text = read_scored(config, vocab, train_dir, data_path, skip_unknown, split, reset_every)
    scorer = StreamScorer(config, text.streams, step_precision)
    path = checkpoints.restore_weights(train_dir, scorer.model, path, best)
    if reset_every:
        return scorer.piece_evaluation(text.ids, reset_every, path, text.skipped)
    return scorer.evaluation(text.ids, path, text.skipped)


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
        self._step_weights = tf.function(
            lambda: self.model.step_weights(self.step_precision), autograph=False
        )
        self._batch_losses = tf.function(self._losses_of_batches, autograph=False)

    def _stepped_loss(
        self, inputs: tf.Tensor, targets: tf.Tensor, state: tf.Tensor, weights: dict
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The mean loss of [B, T] `inputs` -> `targets` stepped one character at a time from `state` on
        the step's `weights`, and the state after them."""

        def add_position(
            position: tf.Tensor, total: tf.Tensor, state: Any
        ) -> tuple[tf.Tensor, tf.Tensor, Any]:
            logits, state = self.model.step(inputs[:, position], state, weights)
            return position + 1, total + losses.sequence_loss(targets[:, position], logits), state

        _, total, state = tf.while_loop(
            lambda position, *_: position < tf.shape(inputs)[1],
            add_position,
            (tf.constant(0), tf.constant(0.0), self.model.loop_state(state, weights)),
        )
        return total / tf.cast(tf.shape(inputs)[1], tf.float32), self.model.caller_state(state)

    def _losses_of_batches(
        self, batches: tf.data.Dataset, zero_state: tf.Tensor, weights: dict | None, from_zero_each: bool
    ) -> tf.Tensor:
        """The mean loss of each batch of `batches`, in one call, from a zero state carried from one batch to
        the next (the model's own in the sequence pass, the step's on its `weights` in the stepped one), or
        with `from_zero_each` each batch from a zero state: float32 [batches]."""
        if not from_zero_each:
            self.model.reset_state()

        def add_batch(
            carried: tuple[tf.TensorArray, tf.Tensor], batch: tuple
        ) -> tuple[tf.TensorArray, tf.Tensor]:
            (batch_losses, state), (inputs, targets) = carried, batch
            if from_zero_each:
                self.model.reset_state()
                state = zero_state
            if self.step_precision == "none":
                loss = losses.sequence_loss(targets, self.model(inputs, training=False))
            else:
                assert weights is not None  # packed for every step precision
                loss, state = self._stepped_loss(inputs, targets, state, weights)
            return batch_losses.write(batch_losses.size(), loss), state

        # zero_state is an argument, not a constant the graph could fold: the same arithmetic as eager.
        batch_losses, _ = batches.reduce(
            (tf.TensorArray(tf.float32, size=0, dynamic_size=True), zero_state), add_batch
        )
        return batch_losses.stack()

    def _mean_loss(self, batches: tf.data.Dataset, from_zero_each: bool) -> float:
        """The mean of the per-batch mean losses of `batches` (`_losses_of_batches`), summed as training's
        validation sums them (`Trainer.evaluate`); the step's weights are packed (and rounded) from the
        model's current ones once per call."""
        weights = self._step_weights() if self.step_precision != "none" else None
        zero_state = self.model.initial_state(self.streams)
        batch_losses = self._batch_losses(batches, zero_state, weights, from_zero_each).numpy().tolist()
        return sum(batch_losses) / len(batch_losses)

    def evaluation(self, ids: np.ndarray, checkpoint: str, skipped_characters: int = 0) -> Evaluation:
        """Scores `ids` (of the run's vocabulary), in `stream_layout`; an Evaluation naming `checkpoint`."""
        streams, seq_length, num_batches = stream_layout(
            len(ids), self.config.layout.batch_size, self.config.layout.seq_length
        )
        batches = pipeline.stream_dataset(np.asarray(ids), streams, seq_length, num_batches)
        return _evaluation(
            checkpoint,
            self._mean_loss(batches, from_zero_each=False),
            streams * seq_length * num_batches,
            skipped_characters,
        )

    def piece_evaluation(
        self, ids: np.ndarray, piece_length: int, checkpoint: str, skipped_characters: int = 0
    ) -> Evaluation:
        """Scores `ids` cut into pieces of `piece_length` predicted characters (`piece_layout`), each
        from a zero state; an Evaluation naming `checkpoint`."""
        rows, num_batches = piece_layout(len(ids), self.config.layout.batch_size, piece_length)
        count = rows * num_batches
        ids = np.asarray(ids, np.int32)
        shape = (num_batches, rows, piece_length)
        batches = tf.data.Dataset.from_tensor_slices(
            (ids[: count * piece_length].reshape(shape), ids[1 : count * piece_length + 1].reshape(shape))
        )
        return _evaluation(
            checkpoint,
            self._mean_loss(batches, from_zero_each=True),
            count * piece_length,
            skipped_characters,
        )


def _evaluation(checkpoint: str, nats: float, characters: int, skipped_characters: int) -> Evaluation:
    return Evaluation(
        checkpoint=checkpoint,
        characters=characters,
        nats_per_char=nats,
        bits_per_char=losses.bits_per_char(nats),
        perplexity=losses.perplexity(nats),
        skipped_characters=skipped_characters,
    )
