"""The rules the training loop asks as it goes: stop on a loss that is no longer finite, stop when
validation has not improved for --patience validations, warn when the model predicts well only from the
state training carried. Each is a small object; the loop asks it at a fixed point (t5x's trainer actions
are the model: `run(state, metrics) -> stop`)."""

import math
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tf_charrnn.errors import UserError, flag

# The carried-state check (see `StateRegime`): validation this far above training since the previous
# validation, and this much of it gone when validation starts from training's carried state.
STATE_REGIME_GAP_NATS = 1.0
STATE_REGIME_CHECK_BATCHES = 8


class Divergence:
    """Stops the run with an error when a step's loss or gradient norm is not finite, before anything
    is saved, so that the newest checkpoint on disk stays the last good one. With float16 loss scaling an
    overflowing gradient is expected (the optimizer skips that step)."""

    def __init__(self, loss_scaling: bool) -> None:
        self.loss_scaling = loss_scaling

    def after_step(self, step: int, loss: float, grad_norm: float) -> None:
        """Raises UserError where step `step` (counted from 1) diverged."""
        if not (math.isfinite(loss) and (math.isfinite(grad_norm) or self.loss_scaling)):
            raise UserError(
                f"training diverged at step {step} (loss {loss}, gradient norm {grad_norm}); "
                f"the last good checkpoint is kept: lower {flag('learning_rate')} or {flag('grad_clip')} and "
                "re-run"
            )


class Patience:
    """Stops the run when --patience validations in a row brought no new best (0: never); says so once."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def exhausted(self, step: int, evals_since_best: int, best_val_loss: float) -> bool:
        """Whether the run should stop at `step` (logged when so)."""
        if not self.patience or evals_since_best < self.patience:
            return False
        logging.info(
            "Stopping early at step %d: %s without a new best (best val loss %.4f); "
            "raise --patience, or set it to 0, to train on",
            step,
            f"{evals_since_best} validation{'s' if evals_since_best > 1 else ''}",
            best_val_loss,
        )
        return True


class StateRegime:
    """Warns (once) when the model only predicts well from the recurrent state training carried.

    Training streams carry their state from batch to batch; validation, evaluate.py and sampling start
    from a zero state. A learning rate too high for the model can drive it where its predictions rely on
    a state that only training's unbroken streams reach (an LSTM cell state growing by about one per
    character, |c| in the thousands): training then logs a loss that no other use of the model sees.
    Told apart from overfitting by scoring the first validation batches from a zero state and from
    training's carried state: in that regime most of the gap goes.

    Args:
      learning_rate: the run's, named in the warning.
    """

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self.warned = False
        self._losses: list[float] = []  # training losses of the steps since the last validation

    def after_step(self, loss: float) -> None:
        self._losses.append(loss)

    def after_validation(self, trainer: Any, val_loss: float) -> None:
        """Checks the validation loss (from a zero state) against the mean training loss since the
        previous validation; `trainer` scores validation batches (`validation_losses`) and holds the
        carried state (`global_state`)."""
        if not self._losses:
            return
        train_loss = float(np.mean(self._losses))
        self._losses = []
        if self.warned or val_loss - train_loss < STATE_REGIME_GAP_NATS:
            return
        batches = min(trainer.batches.val_batches, STATE_REGIME_CHECK_BATCHES)
        from_zero = sum(trainer.validation_losses(batches=batches)) / batches
        from_carried = sum(trainer.validation_losses(from_carried_state=True, batches=batches)) / batches
        if from_zero - from_carried < STATE_REGIME_GAP_NATS:
            return
        self.warned = True
        largest_state = max(float(tf.reduce_max(tf.abs(state))) for state in trainer.global_state.variables)
        logging.warning(
            "Validation loss %.2f is %.2f nats above the training loss %.2f, and %.2f when validation starts "
            "from the state training carried (largest |state| %s) instead of a zero state: the model "
            "predicts well only from a state that training's unbroken streams reach, not from the zero "
            "state evaluation and sampling start from; lower --learning_rate (now %g; e.g. 0.002) or warm "
            "it up (--lr_schedule=cosine --warmup_steps=100) in a new --train_dir",
            val_loss,
            val_loss - train_loss,
            train_loss,
            from_carried,
            f"{largest_state:,.0f}",
            self.learning_rate,
        )
