"""The run directory: config.json, vocab.json, checkpoints/ (and checkpoints/best/), logs/.

Everything needed to rebuild a run lives here, so sampling and export need only the directory.
"""

import dataclasses
import json
import os

import tensorflow as tf

from tf_charrnn import files
from tf_charrnn.config import RunConfig, UserError
from tf_charrnn.vocab import Vocab

# Data fields that fix the meaning of a checkpoint's state and data position.
_LAYOUT_FIELDS = ("batch_size", "seq_length", "val_fraction", "random_offset")
# Train fields that fix the structure of a checkpoint's optimizer (float16 adds loss scaling).
_OPTIMIZER_FIELDS = ("mixed_precision",)


def config_path(train_dir):
    return os.path.join(train_dir, "config.json")


def vocab_path(train_dir):
    return os.path.join(train_dir, "vocab.json")


def checkpoint_dir(train_dir, best=False):
    path = os.path.join(train_dir, "checkpoints")
    return os.path.join(path, "best") if best else path


def log_dir(train_dir, split):
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
    """Writes config.json and vocab.json atomically into config.train.train_dir."""
    train_dir = config.train.train_dir
    files.write_atomic(config_path(train_dir), json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
    vocab.save(vocab_path(train_dir))


def _differences(old, new, names):
    return [
        f"{name} {getattr(old, name)!r} -> {getattr(new, name)!r}"
        for name in names
        if getattr(old, name) != getattr(new, name)
    ]


def check_resumable(config, vocab):
    """Raises UserError unless the run already in config.train.train_dir can continue under `config`."""
    train_dir = config.train.train_dir
    old_config, old_vocab = load_run(train_dir)
    if old_vocab != vocab:
        raise UserError(
            f"the corpus vocabulary ({len(vocab)} characters) differs from the run's in "
            f"{train_dir} ({len(old_vocab)}); use the run's corpus or a new --train_dir"
        )
    model_fields = [f.name for f in dataclasses.fields(old_config.model)]
    changed = (
        _differences(old_config.model, config.model, model_fields)
        + _differences(old_config.data, config.data, _LAYOUT_FIELDS)
        + _differences(old_config.train, config.train, _OPTIMIZER_FIELDS)
    )
    if changed:
        raise UserError(
            f"{train_dir} holds a run with another config ({'; '.join(changed)}); use a new "
            f"--train_dir, or --init_from={train_dir} to start from its weights"
        )


def make_checkpoint(model, optimizer=None, **variables):
    """A tf.train.Checkpoint of the model's weights, its dropout RNG state, the optimizer and extra
    variables.

    The weights are tracked as a list rather than through the model so that the checkpoint does not
    hold the recurrent state, which is shaped for one batch size (per replica under a strategy); the
    trainer saves that state itself, gathered over replicas. Keras dropout seed generators live in
    model.non_trainable_variables: without them a resumed run draws other dropout masks.
    """
    tracked = dict(weights=list(model.weights), rng_state=list(model.non_trainable_variables), **variables)
    if optimizer is not None:
        tracked["optimizer"] = optimizer
    return tf.train.Checkpoint(**tracked)


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
