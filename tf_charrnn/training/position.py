"""The training position, checkpointed whole: the steps taken, the epoch and batch of the next step's
data, the best validation loss and the validations since it."""

import math

import tensorflow as tf


class TrainPosition:
    """Where a run stands. The steps taken and the epoch and batch of the next step's data are Python ints
    that `advance` counts (no TensorFlow op a step); a checkpoint holds them as variables, which `store`
    writes before a save and `load` reads after a restore. The best validation loss and the validations
    since it are variables only."""

    def __init__(self) -> None:
        self.step = self.epoch = self.batch_in_epoch = 0
        self.step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._batch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        # Validations since the best one, for --patience.
        self.evals_since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_since_best")

    def checkpointed(self) -> dict[str, tf.Variable]:
        """{name: variable} every checkpoint holds."""
        return {
            "step": self.step_variable,
            "epoch": self._epoch_variable,
            "batch_in_epoch": self._batch_variable,
            "best_val_loss": self.best_val_loss,
        }

    def checkpointed_where_present(self) -> dict[str, tf.Variable]:
        """{name: variable} a checkpoint may lack (written before it existed: it stays 0)."""
        return {"evals_since_best": self.evals_since_best}

    def store(self) -> None:
        """Writes the step, epoch and batch into the variables a checkpoint saves."""
        self.step_variable.assign(self.step)
        self._epoch_variable.assign(self.epoch)
        self._batch_variable.assign(self.batch_in_epoch)

    def load(self) -> None:
        """Reads the step, epoch and batch from the variables a checkpoint restored."""
        self.step = int(self.step_variable)
        self.epoch = int(self._epoch_variable)
        self.batch_in_epoch = int(self._batch_variable)

    def advance(self, epoch: int, batch_index: int, steps_per_epoch: int) -> None:
        """Counts the step just taken on batch `batch_index` of `epoch`, and moves to the next batch."""
        self.step += 1
        if batch_index + 1 == steps_per_epoch:
            self.epoch, self.batch_in_epoch = epoch + 1, 0
        else:
            self.epoch, self.batch_in_epoch = epoch, batch_index + 1

    def record_validation(self, val_loss: float) -> bool:
        """Counts a validation; whether its loss is a new best."""
        if val_loss < float(self.best_val_loss):
            self.best_val_loss.assign(val_loss)
            self.evals_since_best.assign(0)
            return True
        self.evals_since_best.assign_add(1)
        return False
