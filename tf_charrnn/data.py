"""The corpus and its batches: local file or checked download, cached ids, split, tf.data stream pipelines.

Training uses the char-rnn stream layout: the split is cut into `batch_size` contiguous streams, and
row i of batch k+1 continues row i of batch k, so a stateful model carries its state across batches.
"""

import dataclasses
import io
import os
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf

from tf_charrnn import files
from tf_charrnn.errors import UserError
from tf_charrnn.vocab import Vocab

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CACHE_PATH = os.path.join("data", "tinyshakespeare", "input.txt")


def download_shakespeare(cache):
    """Returns the path of the cached tiny-shakespeare corpus, downloading and checking it once."""
    path = os.path.join(cache, SHAKESPEARE_CACHE_PATH)
    if os.path.isfile(path):
        return path
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"could not download the tiny-shakespeare corpus from {SHAKESPEARE_URL} ({e}); "
            f"download it by hand, or pass --data_path=FILE with any UTF-8 text"
        ) from None
    if files.sha256_hex(data) != SHAKESPEARE_SHA256:
        raise UserError(
            f"the file downloaded from {SHAKESPEARE_URL} does not match sha256 "
            f"{SHAKESPEARE_SHA256}; retry, or pass --data_path=FILE"
        )
    files.write_atomic(path, data)
    return path


def read_text(path):
    """Reads a UTF-8 text file.

    Returns:
      (text, data): the decoded string and the raw bytes.
    Raises:
      UserError: the file is missing, a directory, empty or not UTF-8 (with the byte offset).
    """
    if os.path.isdir(path):
        raise UserError(f"--data_path {path} is a directory; pass a UTF-8 text file")
    if not os.path.isfile(path):
        raise UserError(f"--data_path {path} does not exist; pass a UTF-8 text file")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise UserError(f"--data_path {path} is empty; pass a UTF-8 text file with some text")
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"--data_path {path} is not valid UTF-8 at byte {e.start} (line {line}: {e.reason}); "
            f"convert it, e.g. iconv -f LATIN1 -t UTF-8"
        ) from None


def load_corpus(data_config):
    """Loads the corpus named by `data_config` and encodes it, using the id cache.

    The cache is keyed by the SHA-256 of the corpus bytes, so a changed corpus is never served stale.

    Returns:
      (vocab, ids): the corpus vocabulary and [N] ids of the whole corpus, in `vocab.id_dtype`
      (one byte per character for up to 256 distinct characters).
    """
    cache = files.cache_dir(data_config.cache_dir)
    path = data_config.data_path or download_shakespeare(cache)
    text, data = read_text(path)
    cache_path = os.path.join(cache, "encoded", files.sha256_hex(data) + ".npz")
    if os.path.isfile(cache_path):
        with np.load(cache_path) as cached:
            return Vocab(list(cached["chars"])), cached["ids"]
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text, dtype=vocab.id_dtype)
    buffer = io.BytesIO()
    np.savez(buffer, ids=ids, chars=np.array(vocab.chars))
    files.write_atomic(cache_path, buffer.getvalue())
    return vocab, ids


def split_ids(ids, val_fraction):
    """Contiguous split: the first (1 - val_fraction) for training, the rest for validation."""
    num_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:num_train], ids[num_train:]


def num_stream_batches(num_ids, batch_size, seq_length, random_offset=False):
    """Batches in one pass of the stream layout over `num_ids` ids.

    With random offsets the largest offset (seq_length - 1) is reserved, so every epoch has the
    same number of batches whatever its offset.
    """
    reserved = seq_length - 1 if random_offset else 0
    return max(0, (num_ids - 1 - reserved) // (batch_size * seq_length))


def epoch_offset(seed, epoch, seq_length, random_offset):
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


def _stream_windows(ids, seq_length, num_batches, offset, rows):
    """A function k -> (inputs, targets) of batch k of the stream layout starting at `offset`, for the
    streams numbered `rows` (int64 [R])."""
    stream_starts = offset + rows * (num_batches * seq_length)
    window = tf.range(seq_length + 1, dtype=tf.int64)

    def batch(k):
        rows = tf.cast(tf.gather(ids, stream_starts[:, None] + k * seq_length + window[None, :]), tf.int32)
        return rows[:, :-1], rows[:, 1:]

    return batch


def _check_length(ids, batch_size, seq_length, num_batches, max_offset):
    needed = max_offset + batch_size * num_batches * seq_length + 1
    if len(ids) < needed:
        raise ValueError(f"stream layout needs {needed} ids, got {len(ids)}")


def _without_autotune(dataset):
    # A fixed prefetch buffer; the autotuning thread was seen to stall iterator teardown for ~1 minute.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def _rows(batch_size, first_row, num_rows):
    num_rows = batch_size - first_row if num_rows is None else num_rows
    if not 0 <= first_row < first_row + num_rows <= batch_size:
        raise ValueError(
            f"rows [{first_row}, {first_row + num_rows}) are not within the {batch_size} streams"
        )
    return tf.range(first_row, first_row + num_rows, dtype=tf.int64)


def stream_dataset(
    ids, batch_size, seq_length, num_batches, offset=0, start_batch=0, first_row=0, num_rows=None
):
    """Shifted (inputs, targets) batches in the stream layout, one pass.

    Stream i holds ids[offset + i*S : offset + (i+1)*S] with S = num_batches * seq_length; batch k
    holds columns [k*seq_length, (k+1)*seq_length) of every stream. Targets are the inputs shifted by
    one id; the last target of each stream is the id that follows it in the corpus (never a wrap-around).

    Args:
      ids: integer [N] ids (numpy or tensor, any integer type) with N >= offset + batch_size * S + 1.
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
        tf.convert_to_tensor(ids),
        seq_length,
        num_batches,
        tf.cast(offset, tf.int64),
        _rows(batch_size, first_row, num_rows),
    )
    return _without_autotune(tf.data.Dataset.range(start_batch, num_batches).map(batch))


def training_dataset(
    ids,
    batch_size,
    seq_length,
    num_batches,
    seed,
    random_offset,
    start_epoch=0,
    start_batch=0,
    first_row=0,
    num_rows=None,
):
    """Endless training batches, epoch after epoch, each epoch in the stream layout at its own offset.

    Args:
      ids: integer [N] training ids (kept in their type; batches are int32).
      batch_size, seq_length, num_batches: the layout (num_batches per epoch, from `num_stream_batches`).
      seed, random_offset: see `epoch_offset`.
      start_epoch, start_batch: where to start (resuming).
      first_row, num_rows: see `stream_dataset`.

    Returns:
      A tf.data.Dataset of (epoch int64, batch int64, inputs int32 [R, T], targets int32 [R, T]).
    """
    _check_length(ids, batch_size, seq_length, num_batches, seq_length - 1 if random_offset else 0)
    ids = tf.convert_to_tensor(ids)
    rows = _rows(batch_size, first_row, num_rows)

    def epoch_batches(epoch):
        batch = _stream_windows(
            ids, seq_length, num_batches, epoch_offset(seed, epoch, seq_length, random_offset), rows
        )
        first = tf.where(epoch == start_epoch, tf.constant(start_batch, tf.int64), 0)
        return tf.data.Dataset.range(first, num_batches).map(lambda k: (epoch, k, *batch(k)))

    epochs = tf.data.Dataset.range(start_epoch, tf.int64.max)
    return _without_autotune(epochs.flat_map(epoch_batches))


def check_split_size(name, num_ids, batch_size, seq_length, random_offset=False):
    """Raises UserError when a split is too short for one batch of the stream layout."""
    if num_stream_batches(num_ids, batch_size, seq_length, random_offset) < 1:
        formula = (
            "batch_size * seq_length + seq_length with --random_offset"
            if random_offset
            else ("batch_size * seq_length + 1")
        )
        needed = batch_size * seq_length + (seq_length if random_offset else 1)
        raise UserError(
            f"the {name} split has {num_ids} characters, fewer than one batch needs "
            f"({formula} = {needed}); "
            f"lower --batch_size or --seq_length, or use a longer corpus"
            + (" or a larger --val_fraction" if name == "validation" else "")
        )


@dataclasses.dataclass(frozen=True)
class Splits:
    """A corpus ready for training: its vocabulary, and the training and validation ids."""

    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray


def load_splits(data_config, layout):
    """Loads the corpus, splits it and checks each split holds at least one batch of the layout.

    Args:
      data_config: DataConfig, where the corpus comes from.
      layout: LayoutConfig.

    Returns:
      Splits.
    Raises:
      UserError: the corpus cannot be read, or a split is shorter than one batch.
    """
    vocab, ids = load_corpus(data_config)
    train_ids, val_ids = split_ids(ids, layout.val_fraction)
    check_split_size("training", len(train_ids), layout.batch_size, layout.seq_length, layout.random_offset)
    if layout.val_fraction > 0:
        check_split_size("validation", len(val_ids), layout.batch_size, layout.seq_length)
    return Splits(vocab, train_ids, val_ids)
