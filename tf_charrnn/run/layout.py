"""What a run directory holds and where: config.json, vocab.json, checkpoints/ (and checkpoints/best/), logs/,
the lock file, the exports' default folders; reading and writing the config and the vocabulary.

Everything needed to rebuild a run lives there, so sampling and export need only the directory.
"""

import glob
import json
import os
from collections.abc import Callable
from typing import TypeVar

from tf_charrnn import files
from tf_charrnn.config import RunConfig
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, first_line, flag, train_command

T = TypeVar("T")


def config_path(train_dir: str) -> str:
    return os.path.join(train_dir, "config.json")


def vocab_path(train_dir: str) -> str:
    return os.path.join(train_dir, "vocab.json")


def checkpoint_dir(train_dir: str, best: bool = False) -> str:
    path = os.path.join(train_dir, "checkpoints")
    return os.path.join(path, "best") if best else path


def export_folder(train_dir: str, format: str, export_dir: str = "") -> str:
    """Where an export in `format` (config.EXPORT_FORMATS) goes: `export_dir`, or by default TRAIN_DIR/export
    (saved_model), TRAIN_DIR/export_litert or TRAIN_DIR/export_web."""
    default = {"saved_model": "export", "litert": "export_litert", "web": "export_web"}[format]
    return export_dir or os.path.join(train_dir, default)


def log_dir(train_dir: str, split: str = "") -> str:
    """logs/ (the HParams session), or its train or val folder."""
    return os.path.join(train_dir, "logs", split)


def lock_path(train_dir: str) -> str:
    return os.path.join(train_dir, "train.lock")


def has_run(train_dir: str) -> bool:
    return os.path.isfile(config_path(train_dir))


def check_config_present(train_dir: str) -> None:
    """Raises UserError when train_dir holds parts of a run (vocab.json, checkpoints/) but no config.json."""
    if has_run(train_dir):
        return
    parts = [path for path in (vocab_path(train_dir), checkpoint_dir(train_dir)) if os.path.exists(path)]
    if parts:
        raise UserError(
            f"{config_path(train_dir)} is missing but {train_dir} holds a run ({', '.join(parts)}); "
            f"restore config.json from a backup, or use a new {flag('train_dir')}"
        )


def no_checkpoint_error(train_dir: str, best: bool = False) -> UserError:
    kind = "best-validation checkpoint" if best else "checkpoint"
    return UserError(f"{train_dir} holds no {kind} yet; train it first ({train_command(train_dir)})")


def checkpoint_not_found_error(train_dir: str, checkpoint: str) -> UserError:
    return UserError(f"checkpoint {checkpoint} not found; list {checkpoint_dir(train_dir)}")


def checkpoint_indexes(directory: str) -> list[str]:
    """The index files of the checkpoints saved in `directory` (ckpt-N.index), sorted by name."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")))


def check_checkpoint_present(train_dir: str, checkpoint: str = "", best: bool = False) -> None:
    """Refuses what the files alone show, before TensorFlow loads: a named `checkpoint` (a local prefix)
    without its index file, or a checkpoint folder with neither the list of checkpoints nor a checkpoint.
    `checkpoints.find_checkpoint` reads the list and checks the rest."""
    if checkpoint:
        if not os.path.exists(checkpoint + ".index"):
            raise checkpoint_not_found_error(train_dir, checkpoint)
        return
    directory = checkpoint_dir(train_dir, best)
    if not os.path.exists(os.path.join(directory, "checkpoint")) and not checkpoint_indexes(directory):
        raise no_checkpoint_error(train_dir, best)


def _read_run_file(path: str, parse: Callable[[str], T], what: str) -> T:
    """parse(text) of a run-directory file, or UserError naming the file, what is wrong and the fix."""
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; restore it from a backup, or use a new {flag('train_dir')}")
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # JSON, UTF-8 and field errors
        raise UserError(
            f"{path} is not a valid {what} ({first_line(error)}); restore it from a backup, or use a new "
            f"{flag('train_dir')}"
        ) from None


def _parse_config(text: str) -> RunConfig:
    return RunConfig.from_dict(json.loads(text))


def load_run(train_dir: str) -> tuple[RunConfig, Vocab]:
    """Reads a run's config and vocabulary.

    Returns:
      (RunConfig, Vocab).
    Raises:
      UserError: train_dir holds no run, or its config.json or vocab.json is missing, unreadable or
        does not fit the other.
    """
    check_config_present(train_dir)
    if not has_run(train_dir):
        raise UserError(
            f"{train_dir} holds no run (no config.json); train one with {train_command(train_dir)}"
        )
    config = _read_run_file(config_path(train_dir), _parse_config, "config")
    vocab = _read_run_file(vocab_path(train_dir), Vocab.from_json, "vocabulary")
    if not config.model.vocab_size:  # a config.json written by hand: the model's vocabulary is vocab.json's
        return config.replace(vocab_size=len(vocab)), vocab
    if config.model.vocab_size != len(vocab):
        raise UserError(
            f"{vocab_path(train_dir)} holds {len(vocab)} characters but config.json says "
            f"{config.model.vocab_size}; restore the run's vocab.json, or use a new {flag('train_dir')}"
        )
    return config, vocab


def save_run(config: RunConfig, vocab: Vocab) -> None:
    """Writes config.json and vocab.json atomically into config.directory.train_dir."""
    train_dir = config.directory.train_dir
    files.write_atomic(config_path(train_dir), json.dumps(config.to_dict(), indent=2, ensure_ascii=False))
    vocab.save(vocab_path(train_dir))
