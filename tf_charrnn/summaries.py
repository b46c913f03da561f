"""TensorBoard summaries of a training run: train and validation scalars, samples, hyperparameters."""

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from tf_charrnn import losses, run_directory


class Summaries:
    """The run's logs/train and logs/val writers; no-ops on a worker that is not the chief."""

    def __init__(self, train_dir, is_chief):
        if is_chief:
            self._train = tf.summary.create_file_writer(run_directory.log_dir(train_dir, "train"))
            self._val = tf.summary.create_file_writer(run_directory.log_dir(train_dir, "val"))
        else:
            self._train = self._val = tf.summary.create_noop_writer()

    def hparams(self, config):
        """Every field of the RunConfig, by name."""
        with self._train.as_default():
            hparams_api.hparams(config.flat())

    def train(self, step, loss, learning_rate, grad_norm, chars_per_sec):
        with self._train.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("grad_norm", grad_norm)
            tf.summary.scalar("chars_per_sec", chars_per_sec)

    def val(self, step, loss, sample=None):
        with self._val.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("perplexity", losses.perplexity(loss))
            if sample is not None:
                tf.summary.text("sample", sample)
        self._val.flush()

    def flush(self):
        self._train.flush()
        self._val.flush()
