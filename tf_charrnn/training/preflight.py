"""What training reads and checks before it needs TensorFlow: the corpus in the run's vocabulary, split; the
config completed with the corpus's facts; and whether that config may train in its run directory. Nothing
here imports TensorFlow, so that scripts/train.py refuses a bad corpus or a run it may not continue in a
fraction of a second, then hands what it read to `trainer.train`."""

from tf_charrnn.config import RunConfig
from tf_charrnn.data import encoded
from tf_charrnn.data.splits import Splits, split_corpus
from tf_charrnn.run import resume


def prepare(config: RunConfig, check_run: bool = True) -> tuple[RunConfig, Splits]:
    """Loads and splits the corpus of `config` and completes the config from it.

    Args:
      config: RunConfig as `resume.config_to_train` returns it.
      check_run: also run `resume.check_fits` (the run directory's checks that read no checkpoint).

    Returns:
      (config with vocab_size and the corpus's identity set, its Splits: a newly encoded corpus's cache
      entry pending until `publish_cache` or `discard_cache`).
    Raises:
      UserError: the corpus cannot be read, a split is shorter than one batch, or a check failed (a corpus
        encoded for this call then leaves no cache entry).
    """
    corpus = encoded.load_corpus(config.data, publish=False)
    try:
        # The corpus's own vocabulary, or a fine-tuned run's (its source's characters first).
        vocab = resume.run_vocab(config, corpus.vocab)
        splits = split_corpus(encoded.in_vocab(corpus, vocab, config.data), config.layout)
    except BaseException:
        if corpus.pending is not None:
            corpus.pending.discard()
        raise
    try:
        config = config.replace(
            vocab_size=len(splits.vocab),
            corpus_sha256=splits.corpus_sha256,
            corpus_size=splits.corpus_size,
            corpus_files=splits.corpus_files,
        )
        if check_run:
            resume.check_fits(config, splits.vocab)
    except BaseException:
        splits.discard_cache()
        raise
    return config, splits
