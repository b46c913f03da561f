"""Training from Python: `tf_charrnn.train(...)` takes every flag of scripts/train.py as a keyword argument,
checks it as the command line does, follows the same run-directory rules, and shows a progress bar."""

import collections
import os
from typing import TYPE_CHECKING, Any

from tf_charrnn import errors
from tf_charrnn.config import RunConfig, python_settings

if TYPE_CHECKING:  # the loop's module loads TensorFlow: imported when training starts
    from tf_charrnn.training.trainer import TrainResult


def train(
    train_dir: str | os.PathLike | None = None,
    data_path: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    **settings: Any,
) -> "TrainResult":
    """Trains a Char-RNN, or resumes the run already in `train_dir`: `scripts/train.py` from Python.

    Every flag of `scripts/train.py` is a keyword argument of the same name, checked the same way
    (`batch_size=32`, `max_steps=300`, `mixed_precision="bfloat16"`, ...). A config file gives settings
    as `--flagfile` does; keyword arguments override it. The run directory follows the command line's
    rules: a new `train_dir` starts a run; one that holds a run resumes it from its latest checkpoint
    with its own config, where the settings given may change its length, cadences and runtime, and a
    different model, data layout, precision or optimisation is refused before anything is written.
    Interrupting (Ctrl-C, a notebook's stop button) saves a checkpoint and returns; call again to resume.

    The library's log lines go to `absl.logging` (shown with `absl.logging.set_verbosity("info")`);
    warnings are shown.

    Args:
      train_dir: the run directory (config, vocabulary, checkpoints, TensorBoard logs); None: the config
        file's, else "runs/default".
      data_path: the UTF-8 text file to train on; None: the config file's, else tiny-shakespeare
        (downloaded and cached on first use).
      config: a flagfile, e.g. "configs/shakespeare_cpu.cfg" (one `--name=value` per line).
      progress: show a progress bar (`keras.utils.Progbar`) with the loss, the validation loss and the
        time left.
      **settings: any other flag of `scripts/train.py`, by name.

    Returns:
      TrainResult: `step` reached, `best_val_loss` (over the whole run) and `last_val_loss` (nats/char),
      `losses` (the training loss of each step this call ran), `val_losses` ((step, loss) of its
      validations), `train_dir`, `last_checkpoint`, and whether it `stopped_early` (`patience`) or was
      stopped by a signal (`stopped_by_signal`).
    Raises:
      UserError: an unknown setting, a bad value, a corpus or run directory that does not fit, a
        diverged run; the message names the argument (`batch_size=`) and the fix. Nothing is written
        when a check fails.

    Example:
    ```python
    result = tf_charrnn.train(
        train_dir="runs/quick",
        data_path="input.txt",
        config="configs/smoke.cfg",
        max_steps=300,
        rnn_units=128,
    )
    result.best_val_loss  # nats/char
    ```
    """
    with errors.python_arguments():
        given = {}
        if config is not None:
            if not isinstance(config, (str, os.PathLike)):
                raise errors.UserError(f"config= must be the path of a flagfile, got {config!r}")
            from tf_charrnn.cli import flags  # the flagfile is read as the command line reads it

            given.update(flags.read_flagfile(os.fspath(config), RunConfig))
        named = {"train_dir": train_dir, "data_path": data_path}
        named = {name: value for name, value in named.items() if value is not None}
        given.update(python_settings(RunConfig, {**settings, **named}))
        run_config = RunConfig.from_flat(given)  # checks every value, before TensorFlow loads
        from tf_charrnn.run import resume
        from tf_charrnn.training import trainer

        run_config = resume.config_to_train(run_config, given)
        bar = _ProgressBar(run_config.cadence.log_every) if progress else None
        try:
            return trainer.train(run_config, bar)
        finally:
            if bar is not None:
                bar.close()


class _ProgressBar:
    """A `keras.utils.Progbar` over the steps one `train` call runs: the training loss (the mean of the
    last `window` steps, as the command line's lines show it), the last validation loss, the time left."""

    def __init__(self, window: int) -> None:
        self._losses: collections.deque[float] = collections.deque(maxlen=window)
        self._values: dict[str, float] = {}
        self._bar: Any = None  # a keras.utils.Progbar from the first step on
        self._first_step = self._current = 0

    def __call__(self, step: int, total_steps: int, values: dict[str, float]) -> None:
        import keras

        if self._bar is None:
            self._first_step = step - 1
            if self._first_step:
                print(f"Resuming at step {self._first_step} of {total_steps}")
            self._bar = keras.utils.Progbar(
                total_steps - self._first_step, stateful_metrics=["loss", "val_loss"], unit_name="step"
            )
        self._losses.append(values["loss"])
        self._values["loss"] = sum(self._losses) / len(self._losses)
        if "val_loss" in values:
            self._values["val_loss"] = values["val_loss"]
        self._current = step - self._first_step
        self._bar.update(self._current, list(self._values.items()))

    def close(self) -> None:
        """Ends the bar when training stopped before its last step (patience, a signal, an error)."""
        if self._bar is not None and self._current < self._bar.target:
            self._bar.update(self._current, list(self._values.items()), finalize=True)
