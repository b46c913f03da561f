"""The run directory: config.json, vocab.json, checkpoints/ (and checkpoints/best/), logs/; every check
that a configuration fits the run there; writing and reading its checkpoints.

Everything needed to rebuild a run lives here, so sampling and export need only the directory.
"""

import contextlib
import fcntl
import glob
import json
import os
import shutil
import socket
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_charrnn import files
from tf_charrnn.config import RunConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError
from tf_charrnn.model.char_rnn import CharRNN


def config_path(train_dir):
    return os.path.join(train_dir, "config.json")


def vocab_path(train_dir):
    return os.path.join(train_dir, "vocab.json")


def checkpoint_dir(train_dir, best=False):
    path = os.path.join(train_dir, "checkpoints")
    return os.path.join(path, "best") if best else path


def log_dir(train_dir, split=""):
    """logs/ (the HParams session), or its train or val folder."""
    return os.path.join(train_dir, "logs", split)


def lock_path(train_dir):
    return os.path.join(train_dir, "train.lock")


def has_run(train_dir):
    return os.path.isfile(config_path(train_dir))


def _check_config_present(train_dir):
    """Raises UserError when train_dir holds parts of a run (vocab.json, checkpoints/) but no config.json."""
    if has_run(train_dir):
        return
    parts = [path for path in (vocab_path(train_dir), checkpoint_dir(train_dir)) if os.path.exists(path)]
    if parts:
        raise UserError(
            f"{config_path(train_dir)} is missing but {train_dir} holds a run ({', '.join(parts)}); "
            f"restore config.json from a backup, or use a new --train_dir"
        )


def _read_run_file(path, parse, what):
    """parse(text) of a run-directory file, or UserError naming the file, what is wrong and the fix."""
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; restore it from a backup, or use a new --train_dir")
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSON, UTF-8 and field errors
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{path} is not a valid {what} ({reason}); restore it from a backup, or use a new --train_dir"
        ) from None


def _parse_config(text):
    return RunConfig.from_dict(json.loads(text))


def load_run(train_dir):
    """Reads a run's config and vocabulary.

    Returns:
      (RunConfig, Vocab).
    Raises:
      UserError: train_dir holds no run, or its config.json or vocab.json is missing, unreadable or
        does not fit the other.
    """
    _check_config_present(train_dir)
    if not has_run(train_dir):
        raise UserError(
            f"{train_dir} holds no run (no config.json); train one with scripts/train.py "
            f"--train_dir={train_dir}"
        )
    config = _read_run_file(config_path(train_dir), _parse_config, "config")
    vocab = _read_run_file(vocab_path(train_dir), Vocab.from_json, "vocabulary")
    if config.model.vocab_size and config.model.vocab_size != len(vocab):
        raise UserError(
            f"{vocab_path(train_dir)} holds {len(vocab)} characters but config.json says "
            f"{config.model.vocab_size}; restore the run's vocab.json, or use a new --train_dir"
        )
    return config, vocab


def config_to_train(config, given):
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
    train_dir = config.length.train_dir
    if has_run(train_dir):
        stored, _ = load_run(train_dir)
        return stored.continued_by(config, {**given, "train_dir": train_dir})
    if config.length.init_from:
        source, _ = load_run(config.length.init_from)
        return config.with_model_of(source, given)
    return config


def save_run(config, vocab):
    """Writes config.json and vocab.json atomically into config.length.train_dir."""
    train_dir = config.length.train_dir
    files.write_atomic(config_path(train_dir), json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
    vocab.save(vocab_path(train_dir))


def run_vocab(config, corpus_vocab):
    """The vocabulary the run `config` trains in, given its corpus's own (sorted) vocabulary: on resume
    the run's own when it started from --init_from (its source's characters first; `check_resumable`
    checks any other); with --init_from, the source run's with the corpus's new characters appended (see
    Vocab.extended); else the corpus's.

    Raises:
      UserError: the run directory or the --init_from run cannot be read.
    """
    train_dir, init_from = config.length.train_dir, config.length.init_from
    if has_run(train_dir):
        stored_config, stored_vocab = load_run(train_dir)
        fits = not stored_vocab.unknown_chars("".join(corpus_vocab.chars))
        return stored_vocab if stored_config.length.init_from and fits else corpus_vocab
    if init_from:
        return load_run(init_from)[1].extended(corpus_vocab.chars)
    return corpus_vocab


def _corpus_changes(old_config, config):
    """'; edited: a.txt' and the like when both configs recorded their corpus's files, else ''."""
    old, new = old_config.data, config.data
    if not (old.corpus_files and new.corpus_files):
        return ""
    changes = corpus_files.describe_changes(old.corpus_files, new.corpus_files)
    if not changes and old.document_separator != new.document_separator:
        changes = f"--document_separator {old.document_separator!r} -> {new.document_separator!r}"
    return f"; {changes}" if changes else ""


def check_resumable(config, vocab, old_config, old_vocab):
    """Raises UserError unless the run in config.length.train_dir, with `old_config` and `old_vocab`, can
    continue under `config`: the same vocabulary, the same corpus (when the run recorded it; a changed
    file is named), and the same fields in every section that must match on resume."""
    train_dir = config.length.train_dir
    if old_vocab != vocab:
        raise UserError(
            f"the corpus vocabulary ({len(vocab)} characters) differs from the run's in "
            f"{train_dir} ({len(old_vocab)}{_corpus_changes(old_config, config)}); use the run's corpus "
            f"or a new --train_dir"
        )
    recorded, current = old_config.data.corpus_sha256, config.data.corpus_sha256
    if recorded and current and recorded != current:
        raise UserError(
            f"the corpus has changed since {train_dir} was trained on it (sha256 {recorded}, "
            f"{old_config.data.corpus_size} bytes; now {current}, {config.data.corpus_size} bytes"
            f"{_corpus_changes(old_config, config)}); resume with the original files, or start a new "
            f"--train_dir with --init_from={train_dir}"
        )
    changed = old_config.differences_that_block_resume(config)
    if changed:
        raise UserError(
            f"{train_dir} holds a run with another config ({'; '.join(changed)}); use a new "
            f"--train_dir, or --init_from={train_dir} to start from its weights"
        )


# The fields of ModelConfig that shape the weights (vocab_size aside: new characters may be appended).
SHAPE_FIELDS = ("embedding_dim", "rnn_units", "num_layers", "cell")


def check_init_from(config, vocab):
    """Raises UserError unless the run in config.length.init_from has this model shape and a vocabulary
    that `vocab` starts with (the same, or with new characters appended)."""
    init_from = config.length.init_from
    init_config, init_vocab = load_run(init_from)
    if vocab.chars[: len(init_vocab)] != init_vocab.chars:
        raise UserError(
            f"--init_from {init_from} has another vocabulary order than this run's ({len(init_vocab)} "
            f"characters there, {len(vocab)} here); use a new --train_dir"
        )
    different = [
        f"{name} {getattr(init_config.model, name)!r} there, {getattr(config.model, name)!r} here"
        for name in SHAPE_FIELDS
        if getattr(init_config.model, name) != getattr(config.model, name)
    ]
    if different:
        raise UserError(
            f"--init_from {init_from} has another model shape ({'; '.join(different)}); drop those flags "
            f"(they default to that run's), or train from scratch without --init_from"
        )


def _check_fits(config, vocab):
    """The checks of `prepare`, which write nothing; returns the run's previous config (or None)."""
    train_dir = config.length.train_dir
    _check_config_present(train_dir)
    previous, paths = None, []
    if has_run(train_dir):
        previous, previous_vocab = load_run(train_dir)
        check_resumable(config, vocab, previous, previous_vocab)
        # A list of checkpoints that is missing, garbled or names only files that are gone.
        paths = checkpoint_paths(checkpoint_dir(train_dir))
        if paths:
            _newest_present(checkpoint_dir(train_dir), paths)
    if config.length.init_from and not paths:  # a run with checkpoints resumes from them instead
        check_init_from(config, vocab)
    return previous


def prepare(config, vocab):
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
    lock = RunLock(config.length.train_dir)
    try:
        previous = _check_fits(config, vocab)  # again: another trainer may have written in between
    except BaseException:
        lock.release()
        raise
    return previous, lock


class RunLock:
    """The run directory's exclusive lock, held by its one trainer for the whole run.

    An advisory lock (flock) on TRAIN_DIR/train.lock: the kernel drops it when its process ends, however
    it ends, so a killed trainer leaves no lock behind. The file names the holder for whoever is refused;
    `release` removes it (and the run directory, where the lock created it and it is still empty).
    Sampling, evaluation and export do not take it.

    Raises:
      UserError: another process holds the lock.
    """

    def __init__(self, train_dir):
        self._folders_made = files.make_folders(train_dir)
        self._path = lock_path(train_dir)
        while True:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(self._fd)
                files.remove_empty_folders(self._folders_made)
                raise UserError(
                    f"{train_dir} is being trained by {holder} (it holds {self._path}); wait for it to "
                    f"finish or stop it, or use another --train_dir"
                ) from None
            # The holder before may have removed the file between our open and our lock: then lock anew.
            try:
                if os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                    break
            except FileNotFoundError:
                pass
            os.close(self._fd)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode("utf-8"), 0)

    def release(self):
        if self._fd is not None:
            # Removed while locked: a process that opened this file meanwhile finds it gone and locks anew.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
            files.remove_empty_folders(self._folders_made)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()


def checkpoint_paths(directory):
    """The checkpoint prefixes the `checkpoint` state file of `directory` lists, oldest first.

    Raises:
      UserError: the state file is garbled, or missing while checkpoint files are there.
    """
    state_path = os.path.join(directory, "checkpoint")
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as error:  # noqa: BLE001 - UnicodeDecodeError, text_format.ParseError, ValueError
        raise UserError(
            f"{state_path} (the list of checkpoints) is garbled ({_first_line(error)}); restore it from a "
            f"backup, or move {directory} away to start the run over"
        ) from None
    if state is None:
        found = sorted(glob.glob(os.path.join(directory, "ckpt-*.index")))
        if found:
            raise UserError(
                f"{state_path} (the list of checkpoints) is missing but {directory} holds "
                f"{len(found)} checkpoint(s); restore it from a backup, or move {directory} away to "
                f"start the run over"
            )
        return []
    return list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]


def checkpoint_contents(model, optimizer=None, **variables):
    """What a training checkpoint holds, {name: trackable}: the model's weights, its dropout RNG state,
    the optimizer and extra variables.

    The weights are tracked as a list rather than through the model so that the checkpoint does not
    hold the recurrent state, which is shaped for one batch size (per replica under a strategy); the
    trainer saves that state itself, gathered over replicas. Keras dropout seed generators live in
    model.non_trainable_variables: without them a resumed run draws other dropout masks.
    """
    contents = dict(weights=list(model.weights), rng_state=list(model.non_trainable_variables), **variables)
    if optimizer is not None:
        contents["optimizer"] = optimizer
    return contents


def find_checkpoint(train_dir, checkpoint=None, best=False):
    """The checkpoint prefix to load: `checkpoint` if given, else the best or the latest one."""
    if checkpoint:
        if not tf.io.gfile.glob(checkpoint + ".index"):
            raise UserError(f"checkpoint {checkpoint} not found; list {checkpoint_dir(train_dir)}")
        return checkpoint
    directory = checkpoint_dir(train_dir, best)
    paths = checkpoint_paths(directory)
    if not paths:
        kind = "best-validation checkpoint" if best else "checkpoint"
        raise UserError(
            f"{train_dir} holds no {kind} yet; train it first (scripts/train.py --train_dir={train_dir})"
        )
    return _newest_present(directory, paths)


def _newest_present(directory, paths):
    """The newest of the checkpoint prefixes `paths` whose files are there.

    Raises:
      UserError: none is.
    """
    for path in reversed(paths):
        if tf.io.gfile.glob(path + ".index"):
            return path
    raise UserError(
        f"{directory}/checkpoint lists checkpoints whose files are gone ({os.path.basename(paths[-1])} and "
        f"older); restore them from a backup, or move {directory} away to start the run over"
    )


def restore_weights(train_dir, target, checkpoint=None, best=False):
    """Loads a run's learned weights into `target`, a model of the same config and any batch size.

    Returns:
      The checkpoint prefix that was loaded.
    """
    load_run(train_dir)
    path = find_checkpoint(train_dir, checkpoint, best)
    try:
        tf.train.Checkpoint(weights=list(target.weights)).restore(
            path
        ).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise UserError(
            f"checkpoint {path} is unreadable ({_first_line(error)}); pass an older one with "
            f"--checkpoint (the files in {os.path.dirname(path)})"
        ) from None
    return path


def initialize_from_run(source_dir, target, vocab):
    """Loads the latest weights of the run in `source_dir` into `target`, a model of the same shape whose
    vocabulary `vocab` is the source's or extends it (see CharRNN.copy_weights_extending_vocab).

    Returns:
      (the checkpoint prefix loaded, the characters `vocab` adds to the source's).
    """
    source_config, source_vocab = load_run(source_dir)
    new_chars = vocab.chars[len(source_vocab) :]
    if not new_chars:
        return restore_weights(source_dir, target), new_chars
    source = CharRNN(source_config.model, batch_size=1)
    path = restore_weights(source_dir, source)
    target.copy_weights_extending_vocab(source)
    return path, new_chars


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _sync_checkpoint_files(save_path):
    """Syncs a just-written checkpoint's files and folder (called before the manager lists it)."""
    for path in glob.glob(save_path + ".*"):
        files.fsync_file(path)
    files.fsync_directory(os.path.dirname(save_path))


class Checkpoints:
    """The latest (--keep of them) and the best-validation checkpoints of a training run.

    Every worker saves (saving may need collectives), but only the chief into the run directory; the
    others into a scratch folder that `close` removes.

    Args:
      contents: {name: trackable} every checkpoint of the run holds (see `checkpoint_contents`).
      step: the int64 step variable, which numbers the checkpoints.
      train_dir, keep: the run directory, and the latest checkpoints kept there.
      is_chief: whether this worker writes into the run directory.
      added: {name: variable} saved besides `checkpoint`'s, and restored where a checkpoint has them
        (checkpoints written before they were added do not).
    """

    def __init__(self, contents, step, train_dir, keep, is_chief, added=None):
        self._contents = contents
        self._required = tf.train.Checkpoint(**contents)
        self._added = tf.train.Checkpoint(**(added or {}))
        self.checkpoint = tf.train.Checkpoint(**contents, **(added or {}))
        self.train_dir = train_dir
        self._step = step
        self._scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="tf_charrnn_worker_")
        self._managers = {best: self._manager(best, keep if not best else 1) for best in (False, True)}
        self._saved_here = {False: None, True: None}  # the step each kind was last saved at, by this process

    def _manager(self, best, max_to_keep):
        directory = checkpoint_dir(self.train_dir, best)
        if self._scratch_dir:
            directory = os.path.join(self._scratch_dir, os.path.relpath(directory, self.train_dir))
        return tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep, step_counter=self._step
        )

    def restore_latest(self):
        """Restores the newest readable checkpoint; an unreadable one (truncated, corrupted) is skipped
        with a warning for the one before it.

        Returns:
          The restored path, or None when the run has no checkpoint yet.
        Raises:
          UserError: there are checkpoints and none is readable.
        """
        directory = checkpoint_dir(self.train_dir)
        paths = checkpoint_paths(directory)
        for path in reversed(paths):
            try:
                self._required.restore(path).assert_existing_objects_matched().expect_partial()
                self._added.restore(path).expect_partial()
                return path
            except Exception as error:  # noqa: BLE001 - readers fail in many ways (OpError, IndexError, ...)
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying the one before it", path, _first_line(error)
                )
        if paths:
            raise UserError(
                f"no checkpoint in {directory} is readable; "
                f"move that folder away to start over, or use a new --train_dir"
            )
        return None

    def save(self, best=False, before_save=None):
        """Saves a checkpoint of the current step (into checkpoints/best/ with `best`) unless the latest
        already is one; `before_save` runs first when it does (e.g. gathering the replicas' state).

        The files are synced before the list of checkpoints names them, and the list after.

        Returns:
          Its path in the run directory (which the chief writes).
        Raises:
          UserError: the write failed (e.g. the disk is full). Its partial files are removed and the
            list of checkpoints still names the previous one as the newest.
        """
        manager = self._managers[best]
        number = int(self._step)
        # Every worker decides alike, on what this process saved: a chief resuming beside a checkpoint
        # of this step (a run stopped between its best and its latest save, or finished) still joins the
        # collective in `before_save` that a worker with fresh scratch checkpoints runs.
        if self._saved_here[best] != number and before_save:
            before_save()
        self._saved_here[best] = number
        if not (manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"-{number}")):
            # A fresh options object per save: the manager appends its own callback to the list.
            options = tf.train.CheckpointOptions(experimental_write_callbacks=[_sync_checkpoint_files])
            try:
                manager.save(checkpoint_number=number, options=options)
            except (OSError, tf.errors.OpError) as error:
                raise self._failed(manager.directory, number, error) from None
            files.fsync_file(os.path.join(manager.directory, "checkpoint"))
            files.fsync_directory(manager.directory)
        return os.path.join(checkpoint_dir(self.train_dir, best), os.path.basename(manager.latest_checkpoint))

    def _failed(self, directory, number, error):
        """Removes what a failed save of checkpoint `number` left unrecorded; the UserError to raise."""
        name = f"ckpt-{number}"
        recorded = [os.path.basename(path) for path in checkpoint_paths(directory)]
        for entry in os.listdir(directory):
            partial = entry.startswith((f"{name}.", f"{name}_temp")) and name not in recorded
            if partial or entry.startswith("checkpoint.tmp"):
                path = os.path.join(directory, entry)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        newest = f"; the newest checkpoint is still {recorded[-1]}" if recorded else ""
        if files.is_out_of_space(error):
            return files.out_of_space(
                f"checkpoint {name}", directory, self._bytes(), f"re-run the same command to resume{newest}"
            )
        return UserError(
            f"could not write checkpoint {name} in {directory} ({_first_line(error)}){newest}; fix that "
            f"and re-run the same command to resume"
        )

    def _bytes(self):
        """The bytes of the variables a checkpoint holds (about the size of its files)."""
        variables = []
        for value in self._contents.values():
            is_optimizer = isinstance(value, keras.optimizers.Optimizer)
            variables += value.variables if is_optimizer else tf.nest.flatten(value)
        return sum(int(np.prod(variable.shape)) * tf.as_dtype(variable.dtype).size for variable in variables)

    def close(self):
        """Removes a non-chief worker's scratch checkpoints."""
        if self._scratch_dir:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
