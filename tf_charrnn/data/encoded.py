"""A corpus encoded as ids: its vocabulary and memory-mapped ids in the self-checking cache, keyed by the
corpus's SHA-256, and the same ids mapped into a fine-tuned run's vocabulary."""

import dataclasses
import os

import numpy as np

from tf_charrnn import cache, files
from tf_charrnn.config import DataConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.data.sources import download_shakespeare, read_corpus_chunks
from tf_charrnn.data.vocab import Vocab


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


def _encode_into_cache(
    listing: corpus_files.CorpusListing, ids_path: str, vocab_path: str
) -> tuple[Vocab, str, cache.Pending]:
    """Encodes a corpus's files (a corpus_files.CorpusListing) into temporary files beside the id cache
    entry, in two streaming passes (the characters, then the ids), so neither the whole text nor all its
    ids are ever in memory.

    Returns:
      (Vocab, the temporary ids file, the cache.Pending that puts the entry in place).
    Raises:
      UserError: the file is not UTF-8 (found before anything is written), or the cache's disk is full
        or read-only (nothing is left behind).
    """
    chars: set[str] = set()
    num_chars = 0
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


def load_corpus(data_config: DataConfig, publish: bool = True) -> Corpus:
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


def in_vocab(corpus: Corpus, vocab: Vocab, data_config: DataConfig) -> Corpus:
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
