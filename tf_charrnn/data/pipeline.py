"""The tf.data pipelines of the char-rnn stream layout: a split is cut into `batch_size` contiguous
streams, and row i of batch k+1 continues row i of batch k, so a stateful model carries its state across
batches; targets are the inputs shifted by one."""

from collections.abc import Callable

import numpy as np
import tensorflow as tf


def epoch_offset(seed: int, epoch: int | tf.Tensor, seq_length: int, random_offset: bool) -> tf.Tensor:
    """The epoch's start offset in [0, seq_length): seeded by (seed, epoch), so a resumed run sees
    the same windows. Works eagerly and inside tf.data.

    Returns:
      int64 scalar tensor.
    """
    if not random_offset:
        return tf.constant(0, tf.int64)
    return tf.random.stateless_uniform(
        [],
        seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]),
        maxval=seq_length,
        dtype=tf.int64,
    )


def _stream_windows(
    ids: np.ndarray | tf.Tensor, seq_length: int, num_batches: int, offset: tf.Tensor, rows: np.ndarray
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """A function k -> (inputs, targets) of batch k of the stream layout starting at `offset`, for the
    streams numbered `rows` (int64 [R]).

    Windows are read from the numpy (or memory-mapped) ids on the host, so the pipeline holds one
    batch, never the corpus as a tensor.
    """
    ids = np.asarray(ids)
    window = np.arange(seq_length + 1, dtype=np.int64)
    stream_length = num_batches * seq_length

    def read(k: np.ndarray, offset: np.ndarray) -> np.ndarray:
        starts = offset + rows * stream_length + k * seq_length
        return ids[starts[:, None] + window[None, :]].astype(np.int32)

    def batch(k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        windows = tf.numpy_function(read, [k, offset], tf.int32, stateful=False)
        windows.set_shape([len(rows), seq_length + 1])
        return windows[:, :-1], windows[:, 1:]

    return batch


def _check_length(
    ids: np.ndarray | tf.Tensor, batch_size: int, seq_length: int, num_batches: int, max_offset: int
) -> None:
    needed = max_offset + batch_size * num_batches * seq_length + 1
    if len(ids) < needed:
        raise ValueError(f"stream layout needs {needed} ids, got {len(ids)}")


def _without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # A fixed prefetch buffer; the autotuning thread was seen to stall iterator teardown for ~1 minute.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def _rows(batch_size: int, first_row: int, num_rows: int | None) -> np.ndarray:
    num_rows = batch_size - first_row if num_rows is None else num_rows
    if not 0 <= first_row < first_row + num_rows <= batch_size:
        raise ValueError(
            f"rows [{first_row}, {first_row + num_rows}) are not within the {batch_size} streams"
        )
    return np.arange(first_row, first_row + num_rows, dtype=np.int64)


def stream_dataset(
    ids: np.ndarray | tf.Tensor,
    batch_size: int,
    seq_length: int,
    num_batches: int,
    offset: int = 0,
    start_batch: int = 0,
    first_row: int = 0,
    num_rows: int | None = None,
) -> tf.data.Dataset:
    """Shifted (inputs, targets) batches in the stream layout, one pass.

    Stream i holds ids[offset + i*S : offset + (i+1)*S] with S = num_batches * seq_length; batch k
    holds columns [k*seq_length, (k+1)*seq_length) of every stream. Targets are the inputs shifted by
    one id; the last target of each stream is the id that follows it in the corpus (never a wrap-around).

    Args:
      ids: integer [N] ids (numpy, memory-mapped or an eager tensor, any integer type) with
        N >= offset + batch_size * S + 1.
      batch_size, seq_length, num_batches: the layout.
      offset: ids skipped at the start.
      start_batch: first batch to yield (resuming mid-epoch).
      first_row, num_rows: yield only streams [first_row, first_row + num_rows) (one replica's or
        one worker's share); num_rows None: up to the last stream.

    Returns:
      A tf.data.Dataset of (inputs, targets), each int32 [num_rows, T].
    """
    _check_length(ids, batch_size, seq_length, num_batches, offset)
    batch = _stream_windows(
        ids,
        seq_length,
        num_batches,
        tf.cast(offset, tf.int64),
        _rows(batch_size, first_row, num_rows),
    )
    return _without_autotune(
        tf.data.Dataset.range(start_batch, num_batches).map(tf.autograph.experimental.do_not_convert(batch))
    )


def training_dataset(
    ids: np.ndarray | tf.Tensor,
    batch_size: int,
    seq_length: int,
    num_batches: int,
    seed: int,
    random_offset: bool,
    start_epoch: int = 0,
    start_batch: int = 0,
    first_row: int = 0,
    num_rows: int | None = None,
) -> tf.data.Dataset:
    """Endless training batches, epoch after epoch, each epoch in the stream layout at its own offset.

    Args:
      ids: integer [N] training ids (kept in their type; batches are int32).
      batch_size, seq_length, num_batches: the layout (num_batches per epoch: `splits.num_stream_batches`).
      seed, random_offset: see `epoch_offset`.
      start_epoch, start_batch: where to start (resuming).
      first_row, num_rows: see `stream_dataset`.

    Returns:
      A tf.data.Dataset of (epoch int64, batch int64, inputs int32 [R, T], targets int32 [R, T]).
    """
    _check_length(ids, batch_size, seq_length, num_batches, seq_length - 1 if random_offset else 0)
    rows = _rows(batch_size, first_row, num_rows)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        batch = _stream_windows(
            ids, seq_length, num_batches, epoch_offset(seed, epoch, seq_length, random_offset), rows
        )
        first = tf.where(epoch == start_epoch, tf.constant(start_batch, tf.int64), 0)
        return tf.data.Dataset.range(first, num_batches).map(
            tf.autograph.experimental.do_not_convert(lambda k: (epoch, k, *batch(k)))
        )

    epochs = tf.data.Dataset.range(start_epoch, tf.int64.max)
    return _without_autotune(epochs.flat_map(tf.autograph.experimental.do_not_convert(epoch_batches)))
