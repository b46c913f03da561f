"""Whether a configuration may train in a run directory: what a resumed run keeps and what it refuses, and
what a run started from another (--init_from) takes from it."""

from collections.abc import Mapping
from typing import Any

from tf_charrnn.config import RunConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, flag
from tf_charrnn.run.layout import check_config_present, checkpoint_dir, has_run, load_run
from tf_charrnn.run.lock import RunLock


def config_to_train(config: RunConfig, given: Mapping[str, Any]) -> RunConfig:
    """The config a training session runs with: `config` for a new run, with the model settings not
    `given` taken from the --init_from run if any; for the run already in its train_dir, that run's own
    config with the `given` settings on top (which `prepare` then checks) and the runtime of this launch
    (`config`'s: given now or the defaults, never the run's recorded one, so that a run started on two
    workers continues on one).

    Args:
      config: RunConfig built from the defaults and the `given` settings.
      given: {name: value} of the settings given now (on the command line, in a flagfile, as Python
        arguments).
    """
    train_dir = config.directory.train_dir
    if has_run(train_dir):
        stored, _ = load_run(train_dir)
        return stored.continued_by(config, {**given, "train_dir": train_dir})
    if config.directory.init_from:
        source, _ = load_run(config.directory.init_from)
        return config.with_model_of(source, given)
    return config


def run_vocab(config: RunConfig, corpus_vocab: Vocab) -> Vocab:
    """The vocabulary the run `config` trains in, given its corpus's own (sorted) vocabulary: on resume
    the run's own when it started from --init_from (its source's characters first; `check_resumable`
    checks any other); with --init_from, the source run's with the corpus's new characters appended (see
    Vocab.extended); else the corpus's.

    Raises:
      UserError: the run directory or the --init_from run cannot be read.
    """
    train_dir, init_from = config.directory.train_dir, config.directory.init_from
    if has_run(train_dir):
        stored_config, stored_vocab = load_run(train_dir)
        fits = not stored_vocab.unknown_chars("".join(corpus_vocab.chars))
        return stored_vocab if stored_config.directory.init_from and fits else corpus_vocab
    if init_from:
        return load_run(init_from)[1].extended(corpus_vocab.chars)
    return corpus_vocab


def _corpus_changes(old_config: RunConfig, config: RunConfig) -> str:
    """'; edited: a.txt' and the like when both configs recorded their corpus's files, else ''."""
    old, new = old_config.data, config.data
    if not (old.corpus_files and new.corpus_files):
        return ""
    changes = corpus_files.describe_changes(old.corpus_files, new.corpus_files)
    if not changes and old.document_separator != new.document_separator:
        changes = f"{flag('document_separator')} {old.document_separator!r} -> {new.document_separator!r}"
    return f"; {changes}" if changes else ""


def check_resumable(config: RunConfig, vocab: Vocab, old_config: RunConfig, old_vocab: Vocab) -> None:
    """Raises UserError unless the run in config.directory.train_dir, with `old_config` and `old_vocab`, can
    continue under `config`: the same vocabulary, the same corpus (when the run recorded it; a changed
    file is named), and the same fields in every section that must match on resume."""
    train_dir = config.directory.train_dir
    if old_vocab != vocab:
        raise UserError(
            f"the corpus vocabulary ({len(vocab)} characters) differs from the run's in "
            f"{train_dir} ({len(old_vocab)}{_corpus_changes(old_config, config)}); use the run's corpus "
            f"or a new {flag('train_dir')}"
        )
    recorded, current = old_config.data.corpus_sha256, config.data.corpus_sha256
    if recorded and current and recorded != current:
        raise UserError(
            f"the corpus has changed since {train_dir} was trained on it (sha256 {recorded}, "
            f"{old_config.data.corpus_size} bytes; now {current}, {config.data.corpus_size} bytes"
            f"{_corpus_changes(old_config, config)}); resume with the original files, or start a new "
            f"{flag('train_dir')} with {flag('init_from')}={train_dir}"
        )
    changed = old_config.differences_that_block_resume(config)
    if changed:
        raise UserError(
            f"{train_dir} holds a run with another config ({'; '.join(changed)}); use a new "
            f"{flag('train_dir')}, or {flag('init_from')}={train_dir} to start from its weights"
        )


# The fields of ModelConfig that shape the weights (vocab_size aside: new characters may be appended).
SHAPE_FIELDS = ("embedding_dim", "rnn_units", "num_layers", "skip_connections", "cell")


def check_init_from(config: RunConfig, vocab: Vocab) -> None:
    """Raises UserError unless the run in config.directory.init_from has this model shape and a vocabulary
    that `vocab` starts with (the same, or with new characters appended)."""
    init_from = config.directory.init_from
    init_config, init_vocab = load_run(init_from)
    if vocab.chars[: len(init_vocab)] != init_vocab.chars:
        raise UserError(
            f"{flag('init_from')} {init_from} has another vocabulary order than this run's "
            f"({len(init_vocab)} characters there, {len(vocab)} here); use a new {flag('train_dir')}"
        )
    different = [
        f"{name} {getattr(init_config.model, name)!r} there, {getattr(config.model, name)!r} here"
        for name in SHAPE_FIELDS
        if getattr(init_config.model, name) != getattr(config.model, name)
    ]
    if different:
        raise UserError(
            f"{flag('init_from')} {init_from} has another model shape ({'; '.join(different)}); drop "
            f"those flags (they default to that run's), or train from scratch without {flag('init_from')}"
        )


def check_fits(config: RunConfig, vocab: Vocab) -> None:
    """The checks of `prepare` that read no checkpoint (a command runs them before TensorFlow loads): the
    run directory's config is there, the run in it may continue under `config`, and a new run may start
    from --init_from. Raises UserError when one fails; `prepare` runs them again."""
    train_dir = config.directory.train_dir
    check_config_present(train_dir)
    if has_run(train_dir):
        previous, previous_vocab = load_run(train_dir)
        check_resumable(config, vocab, previous, previous_vocab)
    elif config.directory.init_from:
        check_init_from(config, vocab)


def _check_fits(config: RunConfig, vocab: Vocab) -> RunConfig | None:
    """The checks of `prepare`, which write nothing; returns the run's previous config (or None)."""
    # Imported here: the rest of this module runs before a command imports TensorFlow (scripts/train.py).
    from tf_charrnn.run.checkpoints import checkpoint_paths, newest_present

    check_fits(config, vocab)
    train_dir = config.directory.train_dir
    if not has_run(train_dir):
        return None
    previous, _ = load_run(train_dir)
    # A list of checkpoints that is missing, garbled or names only files that are gone.
    paths = checkpoint_paths(checkpoint_dir(train_dir))
    if paths:
        newest_present(checkpoint_dir(train_dir), paths)
    elif config.directory.init_from:  # a run with checkpoints resumes from them instead
        check_init_from(config, vocab)
    return previous


def prepare(config: RunConfig, vocab: Vocab) -> tuple[RunConfig | None, RunLock]:
    """Checks that `config` may resume the run in its train_dir (if any) and start from --init_from (if
    set), then takes the run directory's lock. Writes nothing but the lock file, which the lock removes
    when released: call `save_run` once training starts, so that a run refused before leaves nothing.

    Returns:
      (the RunConfig the run directory held before or None, the RunLock held until training ends; a
      context manager that releases it).
    Raises:
      UserError: a check failed, or another trainer holds the run directory.
    """
    _check_fits(config, vocab)
    lock = RunLock(config.directory.train_dir)
    try:
        previous = _check_fits(config, vocab)  # again: another trainer may have written in between
    except BaseException:
        lock.release()
        raise
    return previous, lock
