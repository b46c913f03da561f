"""A run's checkpoints: what they hold, finding and restoring one, and saving the latest and the best
(`Checkpoints`)."""

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_charrnn import files
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import RERUN, UserError, first_line, flag
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import layout
from tf_charrnn.run.layout import checkpoint_dir, load_run


def checkpoint_paths(directory: str) -> list[str]:
    """The checkpoint prefixes the `checkpoint` state file of `directory` lists, oldest first.

    Raises:
      UserError: the state file is garbled, or missing while checkpoint files are there.
    """
    state_path = os.path.join(directory, "checkpoint")
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception as error:  # noqa: BLE001 - UnicodeDecodeError, text_format.ParseError, ValueError
        raise UserError(
            f"{state_path} (the list of checkpoints) is garbled ({first_line(error)}); restore it from a "
            f"backup, or move {directory} away to start the run over"
        ) from None
    if state is None:
        found = layout.checkpoint_indexes(directory)
        if found:
            raise UserError(
                f"{state_path} (the list of checkpoints) is missing but {directory} holds "
                f"{len(found)} checkpoint(s); restore it from a backup, or move {directory} away to "
                f"start the run over"
            )
        return []
    return list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]


def checkpoint_contents(
    model: keras.Model, optimizer: keras.optimizers.Optimizer | None = None, **variables: tf.Variable
) -> dict[str, Any]:
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


def find_checkpoint(train_dir: str, checkpoint: str | None = None, best: bool = False) -> str:
    """The checkpoint prefix to load: `checkpoint` if given, else the best or the latest one."""
    if checkpoint:
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise layout.checkpoint_not_found_error(train_dir, checkpoint)
        return checkpoint
    directory = checkpoint_dir(train_dir, best)
    paths = checkpoint_paths(directory)
    if not paths:
        raise layout.no_checkpoint_error(train_dir, best)
    return newest_present(directory, paths)


def newest_present(directory: str, paths: Sequence[str]) -> str:
    """The newest of the checkpoint prefixes `paths` whose files are there.

    Raises:
      UserError: none is.
    """
    for path in reversed(paths):
        if tf.io.gfile.exists(path + ".index"):
            return path
    raise UserError(
        f"{directory}/checkpoint lists checkpoints whose files are gone ({os.path.basename(paths[-1])} and "
        f"older); restore them from a backup, or move {directory} away to start the run over"
    )


def restore_weights(
    train_dir: str, target: CharRNN, checkpoint: str | None = None, best: bool = False
) -> str:
    """Loads a run's learned weights into `target`, a model of the same config and any batch size: the
    moving average of the trainable ones where the run keeps one (--ema_decay).

    Returns:
      The checkpoint prefix that was loaded.
    """
    config, _ = load_run(train_dir)
    path = find_checkpoint(train_dir, checkpoint, best)
    try:
        tf.train.Checkpoint(weights=list(target.weights)).restore(
            path
        ).expect_partial().assert_existing_objects_matched()
        if config.optimization.ema_decay:
            tf.train.Checkpoint(weight_average=list(target.trainable_weights)).restore(
                path
            ).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        raise UserError(
            f"checkpoint {path} is unreadable ({first_line(error)}); pass an older one with "
            f"{flag('checkpoint')} (the files in {os.path.dirname(path)})"
        ) from None
    return path


def initialize_from_run(source_dir: str, target: CharRNN, vocab: Vocab) -> tuple[str, list[str]]:
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


def _sync_checkpoint_files(save_path: str) -> None:
    """Syncs a just-written checkpoint's files and folder (called before the manager lists it)."""
    for path in glob.glob(glob.escape(save_path) + ".*"):
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
      optional: {name: variable} saved besides `contents`, restored only where a checkpoint has them
        (checkpoints written by an earlier version lack them).
    """

    def __init__(
        self,
        contents: dict[str, Any],
        step: tf.Variable,
        train_dir: str,
        keep: int,
        is_chief: bool,
        optional: dict[str, tf.Variable] | None = None,
    ) -> None:
        self._contents = contents
        self._required = tf.train.Checkpoint(**contents)
        self._optional = tf.train.Checkpoint(**(optional or {}))
        self.checkpoint = tf.train.Checkpoint(**contents, **(optional or {}))
        self.train_dir = train_dir
        self._step = step
        self._scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="tf_charrnn_worker_")
        self._managers = {best: self._manager(best, keep if not best else 1) for best in (False, True)}
        self._saved_here: dict[bool, int | None] = {
            False: None,
            True: None,
        }  # the step each kind was last saved at, by this process

    def _manager(self, best: bool, max_to_keep: int) -> tf.train.CheckpointManager:
        directory = checkpoint_dir(self.train_dir, best)
        if self._scratch_dir:
            directory = os.path.join(self._scratch_dir, os.path.relpath(directory, self.train_dir))
        return tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep, step_counter=self._step
        )

    def restore_latest(self) -> str | None:
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
                self._optional.restore(path).expect_partial()
                return path
            except Exception as error:  # noqa: BLE001 - readers fail in many ways (OpError, IndexError, ...)
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying the one before it", path, first_line(error)
                )
        if paths:
            raise UserError(
                f"no checkpoint in {directory} is readable; "
                f"move that folder away to start over, or use a new {flag('train_dir')}"
            )
        return None

    def save(self, best: bool = False, before_save: Callable[[], object] | None = None) -> str:
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

    def _failed(self, directory: str, number: int, error: BaseException) -> UserError:
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
                f"checkpoint {name}", directory, self._bytes(), f"{RERUN} to resume{newest}"
            )
        return UserError(
            f"could not write checkpoint {name} in {directory} ({first_line(error)}){newest}; fix that "
            f"and {RERUN} to resume"
        )

    def _bytes(self) -> int:
        """The bytes of the variables a checkpoint holds (about the size of its files)."""
        variables = []
        for value in self._contents.values():
            is_optimizer = isinstance(value, keras.optimizers.Optimizer)
            variables += value.variables if is_optimizer else tf.nest.flatten(value)
        return sum(int(np.prod(variable.shape)) * tf.as_dtype(variable.dtype).size for variable in variables)

    def close(self) -> None:
        """Removes a non-chief worker's scratch checkpoints."""
        if self._scratch_dir:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
