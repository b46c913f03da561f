"""The training loop: `train` sets a run up, `Trainer.run` reads top to bottom, one step at a time,
with evaluation, checkpoints and summaries at their cadence, and resumes where a run stopped."""

import contextlib
import dataclasses
import signal
import threading
import time
from types import FrameType
from typing import Any, Self

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_charrnn.config import RunConfig
from tf_charrnn.data.splits import Splits
from tf_charrnn.inference.sampling import Decoding, Sampler
from tf_charrnn.model import losses
from tf_charrnn.run import checkpoints, layout, resume
from tf_charrnn.runtime import distribute, placement
from tf_charrnn.training import preflight, rules, schedules
from tf_charrnn.training.position import TrainPosition
from tf_charrnn.training.summaries import Summaries
from tf_charrnn.training.train_step import TrainStep


@dataclasses.dataclass
class TrainResult:
    """What one call of `train` did."""

    step: int  # global step reached
    losses: list[float]  # training loss of each step this call ran, in order
    best_val_loss: float  # best validation nats/char over the whole run (inf without validation)
    last_checkpoint: str
    stopped_by_signal: int | None = None  # the signal number that stopped training early, if any
    stopped_early: bool = False  # --patience validations passed without a new best
    train_dir: str = ""  # the run directory
    val_losses: list[tuple[int, float]] = dataclasses.field(
        default_factory=list
    )  # (step, val nats/char) of this call
    last_val_loss: float | None = None  # the last validation nats/char of this call (None when it ran none)


def train(config: RunConfig, progress: Any = None, splits: Splits | None = None) -> TrainResult:
    """Trains (or resumes) the run described by `config` until its last step.

    Re-running with the same train_dir resumes from the latest checkpoint. SIGINT (Ctrl-C) and
    SIGTERM, received in the main thread, finish the current step, save a checkpoint and return.

    Args:
      config: RunConfig; model.vocab_size is derived from the corpus.
      progress: None, or called after every step as progress(step, total_steps, values) with values
        {"loss": the step's training loss} and, after a validation, "val_loss" (a progress bar).
      splits: the corpus as `preflight.prepare` read it before TensorFlow loaded, with `config` as it
        returned it (the command line's way); None: read here.

    Returns:
      TrainResult.
    """
    # Nothing is written until training starts: a newly encoded corpus stays out of the cache, config.json,
    # vocab.json and the event files unwritten, until every check has passed and the run is restored.
    if splits is None:
        config, splits = preflight.prepare(config, check_run=False)
    try:
        runtime = placement.resolve(config)  # creates the strategy, before any TensorFlow op
        keras.utils.set_random_seed(config.optimization.seed)
        if config.runtime.deterministic:
            tf.config.experimental.enable_op_determinism()
        return _train_in(config, splits, runtime, progress)
    finally:
        splits.discard_cache()  # a refused run: the corpus it encoded leaves no cache entry


def _train_in(config: RunConfig, splits: Splits, runtime: placement.Runtime, progress: Any) -> TrainResult:
    """`train` once the corpus is read and the runtime resolved: checks, locks, restores, trains."""
    try:
        lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        previous = None
        if runtime.is_chief:
            previous, lock = resume.prepare(config, splits.vocab)
        with lock:
            trainer = Trainer(config, splits, runtime)
            _log_start(trainer, config, runtime)
            try:
                trainer.restore_or_initialize()
                splits.publish_cache()
                if runtime.is_chief:
                    layout.save_run(config, splits.vocab)
                if previous is not None:
                    trainer.log_schedule_change(previous)
                with _StopOnSignal() as stop:
                    return trainer.run(stop, progress)
            finally:
                trainer.checkpoints.close()
    except distribute.PEER_ERRORS as error:
        if distribute.is_multi_worker(runtime.strategy):
            raise distribute.lost_worker_error(runtime.strategy, error, config.directory.train_dir) from error
        raise


def _log_start(trainer: "Trainer", config: RunConfig, runtime: placement.Runtime) -> None:
    logging.info(
        "Model: %s parameters; %s (--strategy=%s); precision %s; recurrent layers on %s",
        f"{trainer.model.count_params():,}",
        runtime.describe(),
        config.runtime.strategy,
        config.precision.mixed_precision if config.precision.mixed_precision != "none" else "float32",
        (
            "the fused C++ kernels" + (" (bfloat16 products)" if runtime.bfloat16_kernels else "")
            if runtime.fused_kernels and config.model.cell == "lstm"
            else "TensorFlow's ops"
        ),
    )


class Trainer:
    """One training run: its step, data position, checkpoints, validation and summaries.

    Args:
      config: RunConfig with model.vocab_size set.
      splits: data.Splits, the vocabulary and the training and validation ids.
      runtime: runtime.Runtime.
    """

    def __init__(self, config: RunConfig, splits: Splits, runtime: placement.Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.vocab = splits.vocab
        self.steps = TrainStep(config, runtime)
        self.model = self.steps.model
        layout = config.layout
        self.global_state = distribute.GlobalState(
            runtime.strategy, self.model.state_variables, layout.batch_size
        )
        self.position = TrainPosition()
        self.weight_average = self.steps.weight_average
        averages = {} if self.weight_average is None else {"weight_average": self.weight_average.variables}
        contents = checkpoints.checkpoint_contents(
            self.model,
            self.steps.optimizer,
            recurrent_state=self.global_state.variables,
            **averages,
            **self.position.checkpointed(),
        )
        self.checkpoints = checkpoints.Checkpoints(
            contents,
            self.position.step_variable,
            config.directory.train_dir,
            config.cadence.keep,
            runtime.is_chief,
            optional=self.position.checkpointed_where_present(),
        )
        self.batches = distribute.RunBatches(runtime.strategy, splits, layout, config.optimization.seed)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = config.length.total_steps(self.steps_per_epoch)
        self.sampler = (
            Sampler(config.model, runtime.fused_kernels)
            if config.cadence.sample_length and runtime.is_chief
            else None
        )
        self.summaries = Summaries(config.directory.train_dir, runtime.is_chief)
        self.last_val_loss: float | None = None
        self.divergence = rules.Divergence(runtime.loss_scaling)
        self.patience = rules.Patience(config.cadence.patience)
        self.state_regime = rules.StateRegime(config.optimization.learning_rate)

    def run(self, stop: "_StopOnSignal", progress: Any = None) -> TrainResult:
        """Trains from the current position to the last step, or until `stop.signal` is set; calls
        `progress` after every step (see `train`)."""
        cadence = self.config.cadence
        position = self.position
        start_step = position.step
        if start_step == 0:
            self.summaries.hparams(self.config)
        window = _MetricsWindow()
        step_losses: list[float] = []
        val_losses: list[tuple[int, float]] = []
        logging.info(
            "Training %d steps (%d per epoch) from step %d in %s with %d replica(s) (--strategy=%s)",
            self.total_steps,
            self.steps_per_epoch,
            start_step,
            self.config.directory.train_dir,
            self.runtime.replicas,
            self.config.runtime.strategy,
        )
        stopped_early = self._out_of_patience()
        for epoch, batch_index, inputs, targets in self.batches.training(
            position.epoch, position.batch_in_epoch
        ):
            if position.step >= self.total_steps or stopped_early:
                break
            epoch, batch_index = (int(self.steps.first_replica(value)) for value in (epoch, batch_index))
            if batch_index == 0:
                self.model.reset_state()
            metrics = self._train_one(inputs, targets, epoch, stop)
            position.advance(epoch, batch_index, self.steps_per_epoch)
            step_losses.append(metrics["loss"])
            self.state_regime.after_step(metrics["loss"])
            window.add(metrics)
            step = position.step
            last = step == self.total_steps
            if step % cadence.log_every == 0 or last:
                self._log_progress(window.flush(), epoch, start_step)
            if self.batches.val_batches and (step % cadence.eval_every == 0 or last):
                val_losses.append((step, self._evaluate_and_log()))
                stopped_early = self._out_of_patience()
            if progress is not None:
                values = {"loss": metrics["loss"]}
                if val_losses and val_losses[-1][0] == step:
                    values["val_loss"] = self.last_val_loss
                progress(step, self.total_steps, values)
            if step % cadence.ckpt_every == 0:
                self.save()
            if last or metrics["stopping"] or stopped_early:
                break
        if stop.signal is not None:
            logging.warning(
                "Stopped by signal %d at step %d; re-run the same command to resume",
                stop.signal,
                position.step,
            )
        last_checkpoint = self.save()
        self.summaries.flush()
        return TrainResult(
            step=position.step,
            losses=step_losses,
            best_val_loss=float(position.best_val_loss),
            last_checkpoint=last_checkpoint,
            stopped_by_signal=stop.signal,
            stopped_early=stopped_early,
            train_dir=self.config.directory.train_dir,
            val_losses=val_losses,
            last_val_loss=self.last_val_loss,
        )

    def _train_one(
        self, inputs: tf.Tensor, targets: tf.Tensor, epoch: int, stop: "_StopOnSignal"
    ) -> dict[str, Any]:
        """One step at its scheduled learning rate; its metrics as Python values.

        Raises:
          UserError: the loss or the gradient is not finite (see `rules.Divergence`).
        """
        started = time.perf_counter()
        step = self.position.step
        if step == self.config.optimization.dropout_from_step > 0:
            logging.info("Dropout on from step %d (--dropout_from_step)", step)
        learning_rate = schedules.learning_rate(self.config.optimization, step, epoch, self.total_steps)
        metrics = self.steps.train(inputs, targets, learning_rate, stop=stop.signal is not None, step=step)
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        # Every worker sees the same votes, so all of them stop after this step (a signal received
        # later is voted on at the next step).
        stopping = float(metrics["stop_votes"]) > 0
        if stopping and stop.signal is None:
            logging.warning("Another worker was stopped by a signal; stopping with it")
            stop.signal = signal.SIGTERM
        self.divergence.after_step(step + 1, loss, grad_norm)
        return {
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": learning_rate,
            "stopping": stopping,
            "seconds": time.perf_counter() - started,
        }

    def _log_progress(self, window: dict[str, Any], epoch: int, start_step: int) -> None:
        step = self.position.step
        layout = self.config.layout
        chars_per_sec = window["steps"] * layout.batch_size * layout.seq_length / window["seconds"]
        self.summaries.train(
            step, window["loss"], window["learning_rate"], window["grad_norm"], chars_per_sec
        )
        eta = (self.total_steps - step) * window["total_seconds"] / (step - start_step)
        logging.info(
            "step %d/%d | epoch %d (%.2f) | loss %.4f | val %s | %s chars/s | ETA %s",
            step,
            self.total_steps,
            epoch + 1,
            step / self.steps_per_epoch,
            window["loss"],
            "-" if self.last_val_loss is None else f"{self.last_val_loss:.4f}",
            f"{chars_per_sec:,.0f}",
            _format_duration(eta),
        )

    def _evaluate_and_log(self) -> float:
        """Evaluates, writes the val summaries, checks the state regime and keeps the best-val checkpoint;
        returns the validation loss."""
        step = self.position.step
        val_loss = self.evaluate()
        self.last_val_loss = val_loss
        best_loss = min(val_loss, float(self.position.best_val_loss))
        self.summaries.val(
            step, val_loss, best_loss, self.sample_text() if self.sampler is not None else None
        )
        logging.info(
            "step %d | val loss %.4f nats/char | %.4f bits/char | perplexity %.3f",
            step,
            val_loss,
            losses.bits_per_char(val_loss),
            losses.perplexity(val_loss),
        )
        self.state_regime.after_validation(self, val_loss)
        if self.position.record_validation(val_loss):
            self.save(best=True)
        return val_loss

    def _out_of_patience(self) -> bool:
        """Whether --patience validations in a row brought no new best (see `rules.Patience`)."""
        position = self.position
        return self.patience.exhausted(
            position.step, int(position.evals_since_best), float(position.best_val_loss)
        )

    def log_schedule_change(self, previous: RunConfig) -> None:
        """Says what a changed run length does to the learning-rate schedule of a resumed run."""
        old_total = previous.length.total_steps(self.steps_per_epoch)
        step, epoch = self.position.step, self.position.epoch
        if old_total != self.total_steps and step > 0:
            logging.warning(
                schedules.describe_length_change(
                    self.config.optimization, step, epoch, old_total, self.total_steps
                )
            )

    def restore_or_initialize(self) -> None:
        """Resumes from the newest readable checkpoint, or loads --init_from weights into a fresh run."""
        path = self.checkpoints.restore_latest()
        if path:
            self.position.load()
            self.global_state.scatter()
            logging.info(
                "Resumed %s at step %d (epoch %d, batch %d)",
                path,
                self.position.step,
                self.position.epoch,
                self.position.batch_in_epoch,
            )
        elif self.config.directory.init_from:
            path, new_chars = checkpoints.initialize_from_run(
                self.config.directory.init_from, self.model, self.vocab
            )
            logging.info("Initialized weights from %s", path)
            if self.weight_average is not None:
                self.weight_average.reset()
            if new_chars:
                logging.info(
                    "%d new character(s) appended to the vocabulary of %s (ids %d to %d): %r",
                    len(new_chars),
                    self.config.directory.init_from,
                    len(self.vocab) - len(new_chars),
                    len(self.vocab) - 1,
                    "".join(new_chars),
                )

    def evaluate(self) -> float:
        """Mean validation nats/char over the stream layout, leaving the training state untouched."""
        return sum(self.validation_losses()) / self.batches.val_batches

    def validation_losses(self, from_carried_state: bool = False, batches: int | None = None) -> list[float]:
        """Per-batch validation losses, streams started from a zero state (as evaluate.py and sampling
        start) or from the state training carried; the training state is left as it was.

        Args:
          from_carried_state: start the validation streams from training's current state.
          batches: score only the first this many batches; None: all.

        Returns:
          list of float, nats/char of each batch.
        """
        self.global_state.gather()
        if not from_carried_state:
            self.model.reset_state()
        validation = self.batches.validation
        assert validation is not None  # asked only of a run with a validation split
        count = self.batches.val_batches if batches is None else min(batches, self.batches.val_batches)
        with self.averaged_weights():
            batch_losses = self.steps.evaluate_batches(iter(validation), count).tolist()
        self.global_state.scatter()
        return batch_losses

    def averaged_weights(self) -> contextlib.AbstractContextManager[None]:
        """The weights the run is judged by in the model for a block: the moving average where --ema_decay
        keeps one, else the weights themselves."""
        if self.weight_average is None:
            return contextlib.nullcontext()
        return self.weight_average.swapped_in()

    def sample_text(self) -> str:
        """A short seeded sample from the current weights, for TensorBoard."""
        assert self.sampler is not None  # asked only where there is one
        with self.averaged_weights():
            self.sampler.model.copy_weights_from(self.model)
        prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[0]
        decoding = Decoding(seed=self.config.optimization.seed, temperature=0.8)
        return self.sampler.generate(self.vocab, prime, self.config.cadence.sample_length, decoding)[0]

    def save(self, best: bool = False) -> str:
        """Saves a checkpoint of the current step (see checkpoints.Checkpoints.save); returns its path."""
        self.position.store()
        return self.checkpoints.save(best, before_save=self.global_state.gather)


class _MetricsWindow:
    """Training metrics since the last progress line, and the seconds spent in steps since the start."""

    def __init__(self) -> None:
        self._metrics: list[dict[str, Any]] = []
        self._total_seconds = 0.0

    def add(self, metrics: dict[str, Any]) -> None:
        self._metrics.append(metrics)
        self._total_seconds += metrics["seconds"]

    def flush(self) -> dict[str, Any]:
        """Means of loss and gradient norm, the last learning rate, steps and seconds; then empties."""
        window = {
            "loss": float(np.mean([m["loss"] for m in self._metrics])),
            "grad_norm": float(np.mean([m["grad_norm"] for m in self._metrics])),
            "learning_rate": self._metrics[-1]["learning_rate"],
            "steps": len(self._metrics),
            "seconds": sum(m["seconds"] for m in self._metrics),
            "total_seconds": self._total_seconds,
        }
        self._metrics = []
        return window


class _StopOnSignal:
    """Context manager: SIGINT/SIGTERM set `.signal` instead of interrupting (main thread only)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signal = signum

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
