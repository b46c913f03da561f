"""TensorBoard summaries of a training run: train and validation scalars, samples, and the HParams table
(the hyperparameters that describe the experiment beside the run's best and last validation loss)."""

import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from tf_charrnn.config import RunConfig
from tf_charrnn.model import losses
from tf_charrnn.run import layout

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
    metrics come from logs/val); no-ops on a worker that is not the chief. Each writer creates its event
    file when it first writes, so a run refused before training starts leaves no event file."""

    def __init__(self, train_dir: str, is_chief: bool) -> None:
        self._train_dir = train_dir if is_chief else None
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, split: str) -> tf.summary.SummaryWriter:
        """The writer of logs/`split` ("" for logs/ itself), created on first use."""
        if split not in self._writers:
            self._writers[split] = (
                tf.summary.create_file_writer(layout.log_dir(self._train_dir, split))
                if self._train_dir is not None
                else tf.summary.create_noop_writer()
            )
        return self._writers[split]

    def hparams(self, config: RunConfig) -> None:
        """The experiment's hyperparameters (the fields of HPARAM_SECTIONS, by name) and its metrics."""
        sections = config.to_dict()
        values = {name: value for section in HPARAM_SECTIONS for name, value in sections[section].items()}
        with self._writer("").as_default():
            hparams_api.hparams_config(
                hparams=[hparams_api.HParam(name) for name in values], metrics=list(HPARAM_METRICS)
            )
            hparams_api.hparams(values)
        self._writer("").flush()

    def train(
        self, step: int, loss: float, learning_rate: float, grad_norm: float, chars_per_sec: float
    ) -> None:
        with self._writer("train").as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("grad_norm", grad_norm)
            tf.summary.scalar("chars_per_sec", chars_per_sec)

    def val(self, step: int, loss: float, best_loss: float, sample: str | None = None) -> None:
        with self._writer("val").as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("bits_per_char", losses.bits_per_char(loss))
            tf.summary.scalar("perplexity", losses.perplexity(loss))
            tf.summary.scalar("best_loss", best_loss)
            tf.summary.scalar("best_bits_per_char", losses.bits_per_char(best_loss))
            if sample is not None:
                tf.summary.text("sample", sample)
        self._writer("val").flush()

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()
