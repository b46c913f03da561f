"""The corpus and its batches: local file or checked download, cached ids, split, tf.data stream pipelines.

Training uses the char-rnn stream layout: the split is cut into `batch_size` contiguous streams, and
row i of batch k+1 continues row i of batch k, so a stateful model carries its state across batches.
"""

import dataclasses
import os
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf
from absl import logging

from tf_charrnn import cache, corpus_files, files
from tf_charrnn.errors import UserError
from tf_charrnn.vocab import Vocab

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CACHE_PATH = os.path.join("data", "tinyshakespeare", "input.txt")


def download_shakespeare(cache_folder):
    """Returns the path of the cached tiny-shakespeare corpus, downloading and checking it where it is
    absent, or where the file there is not the corpus (a download cut short, an edit: one warning).

    Raises:
      UserError: the download failed or does not match, or a damaged copy is in a read-only cache.
    """
    path = os.path.join(cache_folder, SHAKESPEARE_CACHE_PATH)
    if os.path.isfile(path):
        digest, size = files.sha256_file(path)
        if digest == SHAKESPEARE_SHA256:
            return path
        found = f"is not the tiny-shakespeare corpus ({size:,} bytes, sha256 {digest})"
        if not cache.writable(os.path.dirname(path)):
            raise UserError(
                f"{path} {found}, and its folder is read-only, so it cannot be downloaded again: delete it, "
                f"or set TF_CHARRNN_CACHE to another folder"
            )
        logging.warning("The downloaded corpus %s %s; downloading it again", path, found)
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


def _check_text_file(path):
    if os.path.isdir(path):
        raise UserError(f"--data_path {path} is a directory; pass a UTF-8 text file")
    if not os.path.isfile(path):
        raise UserError(f"--data_path {path} does not exist; pass a UTF-8 text file")
    if os.path.getsize(path) == 0:
        raise UserError(f"--data_path {path} is empty; pass a UTF-8 text file with some text")


def _not_utf8(path, data, error, offset, lines):
    line = lines + data.count(b"\n", 0, error.start) + 1
    return UserError(
        f"--data_path {path} is not valid UTF-8 at byte {offset + error.start} "
        f"(line {line}: {error.reason}); convert it, e.g. iconv -f LATIN1 -t UTF-8"
    )


def read_text(path):
    """Reads a UTF-8 text file.

    Returns:
      The decoded string.
    Raises:
      UserError: the file is missing, a directory, empty or not UTF-8 (with the byte offset).
    """
    _check_text_file(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, data, error, 0, 0) from None


def _whole_characters(data):
    """The length of the longest prefix of UTF-8 bytes `data` that does not end inside a character."""
    start = len(data) - 1
    while start >= max(0, len(data) - 4) and data[start] & 0xC0 == 0x80:  # continuation bytes
        start -= 1
    if start < 0:
        return len(data)
    lead = data[start]
    length = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    return start if start + length > len(data) else len(data)


def read_text_chunks(path, chunk_bytes=1 << 22):
    """Yields a UTF-8 text file as strings of about `chunk_bytes` bytes each, never splitting a character,
    so that a corpus of any size streams through a few megabytes.

    Raises:
      UserError: the file is missing, a directory, empty or not UTF-8 (with the byte offset).
    """
    _check_text_file(path)
    offset, lines, pending = 0, 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            data = pending + chunk
            if not data:
                return
            cut = _whole_characters(data) if chunk else len(data)
            data, pending = data[:cut], data[cut:]
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, data, error, offset, lines) from None
            offset, lines = offset + len(data), lines + data.count(b"\n")


def read_corpus_chunks(listing, chunk_bytes=1 << 22):
    """Yields the joined text of a corpus's files (a corpus_files.CorpusListing) as strings of about
    `chunk_bytes` bytes: each file's chunks (see `read_text_chunks`), the separator between two files."""
    for index, file in enumerate(listing.files):
        if index and listing.separator:
            yield listing.separator
        yield from read_text_chunks(file.path, chunk_bytes)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """An encoded corpus: its vocabulary, its ids, and the identity of the file they came from."""

    vocab: Vocab
    ids: np.ndarray  # [N] in vocab.id_dtype, memory-mapped from the cache (read-only)
    sha256: str  # of the file's bytes; of several files: of their manifest (see corpus_files)
    size: int  # the file's bytes; of several files: of the joined text
    # A newly encoded cache entry not yet in place (load_corpus(publish=False)); None when there is none.
    pending: cache.Pending | None = None
    files: tuple = ()  # 'SHA256  NAME' of each file (corpus_files.CorpusListing.manifest)


# Small: encoding a chunk takes about 30 bytes of temporaries per character, and the allocator keeps
# what the largest chunk needed.
_ENCODE_CHUNK_BYTES = 1 << 18


def _encode_into_cache(listing, ids_path, vocab_path):
    """Encodes a corpus's files (a corpus_files.CorpusListing) into temporary files beside the id cache
    entry, in two streaming passes (the characters, then the ids), so neither the whole text nor all its
    ids are ever in memory.

    Returns:
      (Vocab, the temporary ids file, the cache.Pending that puts the entry in place).
    Raises:
      UserError: the file is not UTF-8 (found before anything is written), or the cache's disk is full
        or read-only (nothing is left behind).
    """
    chars, num_chars = set(), 0
    for piece in read_corpus_chunks(listing, _ENCODE_CHUNK_BYTES):
        chars.update(piece)
        num_chars += len(piece)
    vocab = Vocab(sorted(chars))
    directory = os.path.dirname(ids_path)
    needed = num_chars * vocab.id_dtype.itemsize
    pending = None
    try:
        pending = cache.Pending(files.make_folders(directory))
        with files.full_disk_is_user_error("the encoded corpus", directory, lambda: needed):
            tmp_ids = pending.temporary(ids_path)
            with open(tmp_ids, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(vocab.id_dtype), "fortran_order": False}
                np.lib.format.write_array_header_1_0(f, {**header, "shape": (num_chars,)})
                for piece in read_corpus_chunks(listing, _ENCODE_CHUNK_BYTES):
                    f.write(vocab.encode(piece, dtype=vocab.id_dtype).tobytes())
                f.flush()
                os.fsync(f.fileno())
            # Last: an entry is complete once its vocabulary is in place.
            files.write_atomic(pending.temporary(vocab_path), vocab.to_json())
    except BaseException as error:
        if pending is not None:
            pending.discard()
        if cache.is_read_only_error(error):
            raise cache.cannot_write(directory, error) from None
        raise
    return vocab, tmp_ids, pending


def load_corpus(data_config, publish=True):
    """Loads the corpus named by `data_config`, encoding it into the id cache on first use.

    --data_path may name a file, a folder, a glob or a list (see corpus_files.list_corpus). The cache is
    keyed by the corpus's SHA-256, so a changed corpus is never served stale;
    its ids are memory-mapped, so memory does not grow with the corpus. Each cache file is checked
    against the size and hash recorded when it was written; a damaged one is rebuilt (one warning).

    Args:
      data_config: DataConfig.
      publish: put a newly encoded entry in place now; False: the Corpus's `pending` does it (or discards
        it when the run is refused, so that a refused corpus leaves no cache entry).

    Returns:
      Corpus.
    Raises:
      UserError: the file is missing, a directory, empty or not UTF-8, or the cache's disk is full, or a
        damaged cache file cannot be rebuilt (read-only cache).
    """
    cache_folder = files.cache_dir(data_config.cache_dir)
    path = data_config.data_path or download_shakespeare(cache_folder)
    listing = corpus_files.list_corpus(path, data_config.document_separator)
    digest, size, manifest = listing.sha256, listing.size, listing.manifest()
    stem = os.path.join(cache_folder, "encoded", digest)
    ids_path, vocab_path = stem + ".ids.npy", stem + ".vocab.json"
    cached = all(
        cache.check_before_use(cache_path, what, path)
        for cache_path, what in ((ids_path, "the id cache"), (vocab_path, "the id cache's vocabulary"))
    )
    if cached:
        return Corpus(Vocab.load(vocab_path), np.load(ids_path, mmap_mode="r"), digest, size, files=manifest)
    vocab, tmp_ids, pending = _encode_into_cache(listing, ids_path, vocab_path)
    corpus = Corpus(vocab, np.load(tmp_ids, mmap_mode="r"), digest, size, pending, manifest)
    if publish:
        pending.publish()
    return corpus


def in_vocab(corpus, vocab, data_config):
    """The corpus with its ids in `vocab`, a vocabulary that holds every character of the corpus in any
    order (a fine-tuned run's: its source's characters first, then the new ones). The ids are mapped from
    the corpus's own a chunk at a time into a cache file of their own (checked and recorded as the id
    cache is; a new one is pending with the corpus's entry, see `load_corpus`), memory-mapped like those.

    Returns:
      Corpus.
    Raises:
      ValueError: the corpus has characters outside `vocab`.
    """
    if vocab == corpus.vocab:
        return corpus
    unknown = vocab.unknown_chars("".join(corpus.vocab.chars))
    if unknown:
        raise ValueError(f"characters not in the vocabulary: {unknown!r}")
    table = vocab.encode("".join(corpus.vocab.chars), dtype=vocab.id_dtype)  # own id -> id in `vocab`
    key = files.sha256_hex(vocab.to_json().encode("utf-8"))[:16]
    folder = os.path.join(files.cache_dir(data_config.cache_dir), "encoded")
    ids_path = os.path.join(folder, f"{corpus.sha256}.{key}.ids.npy")
    if cache.check_before_use(ids_path, "the id cache in a fine-tuned run's vocabulary", "the id cache"):
        return dataclasses.replace(corpus, vocab=vocab, ids=np.load(ids_path, mmap_mode="r"))
    pending = corpus.pending or cache.Pending()
    tmp_ids = pending.temporary(ids_path)
    try:
        with files.full_disk_is_user_error(
            "the encoded corpus", folder, lambda: len(corpus.ids) * table.itemsize
        ):
            with open(tmp_ids, "wb") as f:
                header = {"descr": np.lib.format.dtype_to_descr(table.dtype), "fortran_order": False}
                np.lib.format.write_array_header_1_0(f, {**header, "shape": (len(corpus.ids),)})
                for start in range(0, len(corpus.ids), _ENCODE_CHUNK_BYTES):
                    f.write(table[corpus.ids[start : start + _ENCODE_CHUNK_BYTES]].tobytes())
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        pending.discard()
        raise
    return dataclasses.replace(corpus, vocab=vocab, ids=np.load(tmp_ids, mmap_mode="r"), pending=pending)


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
    streams numbered `rows` (int64 [R]).

    Windows are read from the numpy (or memory-mapped) ids on the host, so the pipeline holds one
    batch, never the corpus as a tensor.
    """
    ids = np.asarray(ids)
    window = np.arange(seq_length + 1, dtype=np.int64)
    stream_length = num_batches * seq_length

    def read(k, offset):
        starts = offset + rows * stream_length + k * seq_length
        return ids[starts[:, None] + window[None, :]].astype(np.int32)

    def batch(k):
        windows = tf.numpy_function(read, [k, offset], tf.int32, stateful=False)
        windows.set_shape([len(rows), seq_length + 1])
        return windows[:, :-1], windows[:, 1:]

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
    return np.arange(first_row, first_row + num_rows, dtype=np.int64)


def stream_dataset(
    ids, batch_size, seq_length, num_batches, offset=0, start_batch=0, first_row=0, num_rows=None
):
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
    """A corpus ready for training: its vocabulary, the training and validation ids, and the identity of
    the corpus file (recorded in the run directory)."""

    vocab: Vocab
    train_ids: np.ndarray
    val_ids: np.ndarray
    corpus_sha256: str
    corpus_size: int
    corpus_files: tuple  # 'SHA256  NAME' of each file
    # A newly encoded id cache entry not yet in place (load_splits(publish=False)); None when there is none.
    pending: cache.Pending | None = None

    def publish_cache(self):
        """Puts a newly encoded id cache entry in place (call once the corpus is accepted)."""
        if self.pending is not None:
            self.pending.publish()

    def discard_cache(self):
        """Removes a newly encoded id cache entry that was not put in place (the run was refused)."""
        if self.pending is not None:
            self.pending.discard()


def split_corpus(corpus, layout):
    """Splits a Corpus and checks each split holds at least one batch of the layout (a LayoutConfig).

    Returns:
      Splits (with the corpus's pending cache entry, discarded when a split is too short).
    Raises:
      UserError: a split is shorter than one batch.
    """
    train_ids, val_ids = split_ids(corpus.ids, layout.val_fraction)
    splits = Splits(
        corpus.vocab, train_ids, val_ids, corpus.sha256, corpus.size, corpus.files, corpus.pending
    )
    try:
        check_split_size(
            "training", len(splits.train_ids), layout.batch_size, layout.seq_length, layout.random_offset
        )
        if layout.val_fraction > 0:
            check_split_size("validation", len(splits.val_ids), layout.batch_size, layout.seq_length)
    except BaseException:
        splits.discard_cache()
        raise
    return splits


def load_splits(data_config, layout, publish=True):
    """Loads the corpus (in its own vocabulary), splits it and checks each split holds at least one batch
    of the layout.

    Args:
      data_config: DataConfig, where the corpus comes from.
      layout: LayoutConfig.
      publish: see `load_corpus`; False: call `publish_cache` or `discard_cache` of the Splits.

    Returns:
      Splits.
    Raises:
      UserError: the corpus cannot be read, or a split is shorter than one batch (a corpus encoded for
        this call leaves no cache entry).
    """
    splits = split_corpus(load_corpus(data_config, publish=False), layout)
    if publish:
        splits.publish_cache()
    return splits
