"""TensorBoard summaries of a training run: train and validation scalars, samples, and the HParams table
(the hyperparameters that describe the experiment beside the run's best and last validation loss)."""

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from tf_charrnn import losses, run_directory

# The config sections that describe the experiment (not file paths, cadences or the runtime).
HPARAM_SECTIONS = ("layout", "model", "precision", "optimization")
# The HParams table's metrics: scalars of the run's logs/val.
HPARAM_METRICS = (
    hparams_api.Metric("best_loss", group="val", display_name="best val loss (nats/char)"),
    hparams_api.Metric("best_bits_per_char", group="val", display_name="best val bits/char"),
    hparams_api.Metric("loss", group="val", display_name="last val loss (nats/char)"),
    hparams_api.Metric("bits_per_char", group="val", display_name="last val bits/char"),
)


class Summaries:
    """The run's logs/train and logs/val writers, and logs/ itself for the HParams table (a session whose
    metrics come from logs/val); no-ops on a worker that is not the chief."""

    def __init__(self, train_dir, is_chief):
        if is_chief:
            self._session = tf.summary.create_file_writer(run_directory.log_dir(train_dir))
            self._train = tf.summary.create_file_writer(run_directory.log_dir(train_dir, "train"))
            self._val = tf.summary.create_file_writer(run_directory.log_dir(train_dir, "val"))
        else:
            self._session = self._train = self._val = tf.summary.create_noop_writer()

    def hparams(self, config):
        """The experiment's hyperparameters (the fields of HPARAM_SECTIONS, by name) and its metrics."""
        sections = config.to_dict()
        values = {name: value for section in HPARAM_SECTIONS for name, value in sections[section].items()}
        with self._session.as_default():
            hparams_api.hparams_config(
                hparams=[hparams_api.HParam(name) for name in values], metrics=list(HPARAM_METRICS)
            )
            hparams_api.hparams(values)
        self._session.flush()

    def train(self, step, loss, learning_rate, grad_norm, chars_per_sec):
        with self._train.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("grad_norm", grad_norm)
            tf.summary.scalar("chars_per_sec", chars_per_sec)

    def val(self, step, loss, best_loss, sample=None):
        with self._val.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("perplexity", losses.perplexity(loss))
            tf.summary.scalar("best_loss", best_loss)
            tf.summary.scalar("best_bits_per_char", losses.bits_per_char(best_loss))
            if sample is not None:
                tf.summary.text("sample", sample)
        self._val.flush()

    def flush(self):
        for writer in (self._session, self._train, self._val):
            writer.flush()
