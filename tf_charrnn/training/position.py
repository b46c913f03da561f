"""The training position, checkpointed whole: the steps taken, the epoch and batch of the next step's
data, the best validation loss and the validations since it."""

import math

import tensorflow as tf


class TrainPosition:
    """Where a run stands, as variables a checkpoint holds (restored with the weights, so a resumed run
    continues at the same batch and keeps its best validation loss)."""

    def __init__(self) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        # Validations since the best one, for --patience.
        self.evals_since_best = tf.Variable(0, dtype=tf.int64, trainable=False, name="evals_since_best")

    def checkpointed(self) -> dict[str, tf.Variable]:
        """{name: variable} every checkpoint holds."""
        return {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_val_loss": self.best_val_loss,
        }

    def checkpointed_where_present(self) -> dict[str, tf.Variable]:
        """{name: variable} a checkpoint may lack (written before it existed: it stays 0)."""
        return {"evals_since_best": self.evals_since_best}

    def advance(self, epoch: int, batch_index: int, steps_per_epoch: int) -> None:
        """Counts the step just taken on batch `batch_index` of `epoch`, and moves to the next batch."""
        self.step.assign_add(1)
        if batch_index + 1 == steps_per_epoch:
            self.epoch.assign(epoch + 1)
            self.batch_in_epoch.assign(0)
        else:
            self.epoch.assign(epoch)
            self.batch_in_epoch.assign(batch_index + 1)

    def record_validation(self, val_loss: float) -> bool:
        """Counts a validation; whether its loss is a new best."""
        if val_loss < float(self.best_val_loss):
            self.best_val_loss.assign(val_loss)
            self.evals_since_best.assign(0)
            return True
        self.evals_since_best.assign_add(1)
        return False
