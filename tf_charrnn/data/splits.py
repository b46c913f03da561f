"""A corpus split for training: the first part for training, then validation, then (with a test fraction)
a test split training never sees, each checked to hold at least one batch of the run's stream layout."""

import dataclasses

import numpy as np

from tf_charrnn import cache
from tf_charrnn.config import DataConfig, LayoutConfig
from tf_charrnn.data.encoded import Corpus, load_corpus
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, flag


def num_stream_batches(num_ids: int, batch_size: int, seq_length: int, random_offset: bool = False) -> int:
    """Batches in one pass of the stream layout over `num_ids` ids.

    With random offsets the largest offset (seq_length - 1) is reserved, so every epoch has the
    same number of batches whatever its offset.
    """
    reserved = seq_length - 1 if random_offset else 0
    return max(0, (num_ids - 1 - reserved) // (batch_size * seq_length))


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous split: the first (1 - val_fraction) for training, the rest for validation."""
    num_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:num_train], ids[num_train:]


def hold_out_test(ids: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The corpus without its last `test_fraction` (split further by `split_ids`), and that test part."""
    num_test = int(len(ids) * test_fraction)
    return ids[: len(ids) - num_test], ids[len(ids) - num_test :]


def check_split_size(
    name: str, num_ids: int, batch_size: int, seq_length: int, random_offset: bool = False
) -> None:
    """Raises UserError when a split is too short for one batch of the stream layout."""
    if num_stream_batches(num_ids, batch_size, seq_length, random_offset) < 1:
        formula = (
            f"batch_size * seq_length + seq_length with {flag('random_offset')}"
            if random_offset
            else ("batch_size * seq_length + 1")
        )
        needed = batch_size * seq_length + (seq_length if random_offset else 1)
        raise UserError(
            f"the {name} split has {num_ids} characters, fewer than one batch needs "
            f"({formula} = {needed}); "
            f"lower {flag('batch_size')} or {flag('seq_length')}, or use a longer corpus"
            + (f" or a larger {flag('val_fraction')}" if name == "validation" else "")
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
    # The held-out test ids (--test_fraction at the corpus's end); empty without a test split.
    test_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))

    def publish_cache(self) -> None:
        """Puts a newly encoded id cache entry in place (call once the corpus is accepted)."""
        if self.pending is not None:
            self.pending.publish()

    def discard_cache(self) -> None:
        """Removes a newly encoded id cache entry that was not put in place (the run was refused)."""
        if self.pending is not None:
            self.pending.discard()


def split_corpus(corpus: Corpus, layout: LayoutConfig) -> Splits:
    """Splits a Corpus and checks each split holds at least one batch of the layout (a LayoutConfig).

    Returns:
      Splits (with the corpus's pending cache entry, discarded when a split is too short).
    Raises:
      UserError: a split is shorter than one batch.
    """
    rest, test_ids = hold_out_test(corpus.ids, layout.test_fraction)
    train_ids, val_ids = split_ids(rest, layout.val_fraction / (1.0 - layout.test_fraction))
    splits = Splits(
        corpus.vocab, train_ids, val_ids, corpus.sha256, corpus.size, corpus.files, corpus.pending, test_ids
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


def load_splits(data_config: DataConfig, layout: LayoutConfig, publish: bool = True) -> Splits:
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
