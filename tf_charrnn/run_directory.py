"""The run directory: config.json, vocab.json, checkpoints/ (and checkpoints/best/), logs/; every check
that a configuration fits the run there; writing and reading its checkpoints.

Everything needed to rebuild a run lives here, so sampling and export need only the directory.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from tf_charrnn import files
from tf_charrnn.config import RunConfig
from tf_charrnn.errors import UserError
from tf_charrnn.vocab import Vocab


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


def has_run(train_dir):
    return os.path.isfile(config_path(train_dir))


def load_run(train_dir):
    """Reads a run's config and vocabulary.

    Returns:
      (RunConfig, Vocab).
    Raises:
      UserError: train_dir holds no run.
    """
    if not has_run(train_dir):
        raise UserError(
            f"{train_dir} holds no run (no config.json); train one with scripts/train.py "
            f"--train_dir={train_dir}"
        )
    with open(config_path(train_dir), encoding="utf-8") as f:
        config = RunConfig.from_dict(json.load(f))
    return config, Vocab.load(vocab_path(train_dir))


def save_run(config, vocab):
    """Writes config.json and vocab.json atomically into config.length.train_dir."""
    train_dir = config.length.train_dir
    files.write_atomic(config_path(train_dir), json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
    vocab.save(vocab_path(train_dir))


def check_resumable(config, vocab, old_config, old_vocab):
    """Raises UserError unless the run in config.length.train_dir, with `old_config` and `old_vocab`, can
    continue under `config`: the same vocabulary, and the same fields in every section that must match
    on resume."""
    train_dir = config.length.train_dir
    if old_vocab != vocab:
        raise UserError(
            f"the corpus vocabulary ({len(vocab)} characters) differs from the run's in "
            f"{train_dir} ({len(old_vocab)}); use the run's corpus or a new --train_dir"
        )
    changed = old_config.differences_that_block_resume(config)
    if changed:
        raise UserError(
            f"{train_dir} holds a run with another config ({'; '.join(changed)}); use a new "
            f"--train_dir, or --init_from={train_dir} to start from its weights"
        )


def check_init_from(config, vocab):
    """Raises UserError unless the run in config.length.init_from has this vocabulary and model shape."""
    init_from = config.length.init_from
    init_config, init_vocab = load_run(init_from)
    if init_vocab != vocab:
        raise UserError(
            f"--init_from {init_from} has another vocabulary ({len(init_vocab)} "
            f"characters, this corpus {len(vocab)}); train on its corpus or drop --init_from"
        )
    if dataclasses.replace(init_config.model, dropout=0.0) != dataclasses.replace(config.model, dropout=0.0):
        raise UserError(
            f"--init_from {init_from} has another model shape; use the same "
            f"--rnn_units, --num_layers, --embedding_dim and --cell as that run"
        )


def prepare(config, vocab):
    """Checks that `config` may resume the run in its train_dir (if any) and start from --init_from (if
    set), then writes config.json and vocab.json.

    Returns:
      The RunConfig the run directory held before (None for a new run).
    """
    previous = None
    if has_run(config.length.train_dir):
        previous, previous_vocab = load_run(config.length.train_dir)
        check_resumable(config, vocab, previous, previous_vocab)
    if config.length.init_from:
        check_init_from(config, vocab)
    save_run(config, vocab)
    return previous


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
    path = tf.train.latest_checkpoint(checkpoint_dir(train_dir, best))
    if path is None:
        kind = "best-validation checkpoint" if best else "checkpoint"
        raise UserError(
            f"{train_dir} holds no {kind} yet; train it first (scripts/train.py --train_dir={train_dir})"
        )
    return path


def restore_weights(train_dir, target, checkpoint=None, best=False):
    """Loads a run's learned weights into `target`, a model of the same config and any batch size.

    Returns:
      The checkpoint prefix that was loaded.
    """
    load_run(train_dir)
    path = find_checkpoint(train_dir, checkpoint, best)
    tf.train.Checkpoint(weights=list(target.weights)).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return path


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
        self._required = tf.train.Checkpoint(**contents)
        self._added = tf.train.Checkpoint(**(added or {}))
        self.checkpoint = tf.train.Checkpoint(**contents, **(added or {}))
        self.train_dir = train_dir
        self._step = step
        self._scratch_dir = None if is_chief else tempfile.mkdtemp(prefix="tf_charrnn_worker_")
        self._managers = {best: self._manager(best, keep if not best else 1) for best in (False, True)}

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
        state = tf.train.get_checkpoint_state(directory)
        paths = list(state.all_model_checkpoint_paths) if state else []
        for path in reversed(paths):
            try:
                self._required.restore(path).assert_existing_objects_matched().expect_partial()
                self._added.restore(path).expect_partial()
                return path
            except Exception as error:  # noqa: BLE001 - readers fail in many ways (OpError, IndexError, ...)
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying the one before it",
                    path,
                    str(error).strip().splitlines()[0],
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

        Returns:
          Its path in the run directory (which the chief writes).
        """
        manager = self._managers[best]
        if not (manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"-{int(self._step)}")):
            if before_save:
                before_save()
            manager.save(checkpoint_number=self._step)
        return os.path.join(checkpoint_dir(self.train_dir, best), os.path.basename(manager.latest_checkpoint))

    def close(self):
        """Removes a non-chief worker's scratch checkpoints."""
        if self._scratch_dir:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
