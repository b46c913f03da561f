"""The text a run is scored or inspected on, read before TensorFlow loads: a --data_path text or one of the
run's held-out splits as ids of the run's vocabulary, and the stream or piece layout it is scored in (so that
evaluate.py and inspect.py refuse a text that is unreadable, too short or outside the vocabulary in a fraction
of a second)."""

import dataclasses
from collections.abc import Sequence

import numpy as np

from tf_charrnn.config import InspectConfig, RunConfig
from tf_charrnn.data import corpus_files, encoded, sources
from tf_charrnn.data.splits import num_stream_batches, split_corpus
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, flag

_MAX_LISTED = 20  # unknown characters named in an error message


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


@dataclasses.dataclass(frozen=True)
class ScoredText:
    """A text to score: its ids in the run's vocabulary, the characters left out, and the rows (streams or
    pieces per batch) it is scored in."""

    ids: np.ndarray
    skipped: int
    streams: int


def read_scored(
    config: RunConfig,
    vocab: Vocab,
    train_dir: str,
    data_path: str = "",
    skip_unknown: bool = False,
    split: str = "validation",
    reset_every: int = 0,
) -> ScoredText:
    """The text evaluate.py scores (`read_ids`) with its layout: streams as training's validation has them,
    or pieces of `reset_every` characters (`piece_layout`).

    Raises:
      UserError: as `read_ids`, or the text is too short for its layout.
    """
    ids, skipped = read_ids(config, vocab, train_dir, data_path, skip_unknown, split)
    if reset_every:
        streams, _ = piece_layout(len(ids), config.layout.batch_size, reset_every)
    else:
        streams, _, _ = stream_layout(len(ids), config.layout.batch_size, config.layout.seq_length)
    return ScoredText(ids, skipped, streams)


def read_inspected(config: InspectConfig, run_config: RunConfig, vocab: Vocab) -> tuple[np.ndarray, int]:
    """(int32 [N] ids of the text inspect.py runs through the model, cut at --max_chars; characters left
    out)."""
    ids, skipped = read_ids(run_config, vocab, config.train_dir, config.data_path, config.skip_unknown)
    ids = np.asarray(ids[: config.max_chars], np.int32)
    if len(ids) < 2:
        raise UserError(
            f"the text has {len(ids)} character(s); at least 2 are needed, pass a longer {flag('data_path')}"
        )
    return ids, skipped
