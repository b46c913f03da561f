"""The training loop: compiled steps over stream batches, evaluation, checkpoints and resume, summaries."""

import dataclasses
import math
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams_api

from tf_charrnn import data as data_lib
from tf_charrnn import losses, run_directory, sampling, schedules
from tf_charrnn import model as model_lib
from tf_charrnn.config import UserError


@dataclasses.dataclass
class TrainResult:
    """What one call of `train` did."""

    step: int  # global step reached
    losses: list  # training loss of each step this call ran, in order
    best_val_loss: float  # best validation nats/char over the whole run (inf without validation)
    last_checkpoint: str
    stopped_by_signal: int = None  # the signal number that stopped training early, if any


def prepare_data(config):
    """Loads the corpus and checks both splits hold at least one batch.

    Returns:
      (vocab, train_ids, val_ids, config) with config.model.vocab_size set.
    """
    vocab, ids = data_lib.load_corpus(config.data)
    train_ids, val_ids = data_lib.split_ids(ids, config.data.val_fraction)
    data_lib.check_split_size(
        "training", len(train_ids), config.data.batch_size, config.data.seq_length, config.data.random_offset
    )
    if config.data.val_fraction > 0:
        data_lib.check_split_size("validation", len(val_ids), config.data.batch_size, config.data.seq_length)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=len(vocab)))
    return vocab, train_ids, val_ids, config


def _prepare_run_dir(config, vocab):
    """Refuses a train_dir holding another run, then writes config.json and vocab.json."""
    if run_directory.has_run(config.train.train_dir):
        run_directory.check_resumable(config, vocab)
    if config.train.init_from:
        init_config, init_vocab = run_directory.load_run(config.train.init_from)
        if init_vocab != vocab:
            raise UserError(
                f"--init_from {config.train.init_from} has another vocabulary ({len(init_vocab)} "
                f"characters, this corpus {len(vocab)}); train on its corpus or drop --init_from"
            )
        if dataclasses.replace(init_config.model, dropout=0.0) != dataclasses.replace(
            config.model, dropout=0.0
        ):
            raise UserError(
                f"--init_from {config.train.init_from} has another model shape; use the same "
                f"--rnn_units, --num_layers, --embedding_dim and --cell as that run"
            )
    run_directory.save_run(config, vocab)


def _format_duration(seconds):
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Trainer:
    """Holds the model, optimizer, compiled steps and run state of one training call."""

    def __init__(self, config, vocab, train_ids, val_ids):
        self.config = config
        self.vocab = vocab
        data, train = config.data, config.train
        self.model = model_lib.build_model(config.model, data.batch_size, seed=train.seed)
        self.optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        self.checkpoint = run_directory.make_checkpoint(
            self.model,
            self.optimizer,
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            best_val_loss=self.best_val_loss,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            run_directory.checkpoint_dir(train.train_dir),
            max_to_keep=train.keep,
            step_counter=self.step,
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint,
            run_directory.checkpoint_dir(train.train_dir, best=True),
            max_to_keep=1,
            step_counter=self.step,
        )
        self.train_ids = tf.constant(train_ids, dtype=tf.int32)
        self.steps_per_epoch = data_lib.num_stream_batches(
            len(train_ids), data.batch_size, data.seq_length, data.random_offset
        )
        self.val_batches = (
            data_lib.num_stream_batches(len(val_ids), data.batch_size, data.seq_length)
            if data.val_fraction > 0
            else 0
        )
        self.val_dataset = (
            data_lib.stream_dataset(val_ids, data.batch_size, data.seq_length, self.val_batches)
            if self.val_batches
            else None
        )
        self.total_steps = train.max_steps or train.num_epochs * self.steps_per_epoch
        self.sampler = sampling.Sampler(config.model) if train.sample_length else None
        self.train_step = tf.function(self._train_step, jit_compile=train.jit_compile)
        self.eval_step = tf.function(self._eval_step, jit_compile=train.jit_compile)

    def _train_step(self, inputs, targets):
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            loss = losses.sequence_loss(targets, logits)
        grads = tape.gradient(loss, self.model.trainable_variables)
        grads, grad_norm = tf.clip_by_global_norm(grads, self.config.train.grad_clip)
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss, grad_norm

    def _eval_step(self, inputs, targets):
        return losses.sequence_loss(targets, self.model(inputs, training=False))

    def restore_or_initialize(self):
        """Resumes from the newest readable checkpoint, or loads --init_from weights into a fresh run.

        An unreadable checkpoint (truncated, corrupted) is skipped with a warning for the one before it.
        """
        train = self.config.train
        for path in reversed(self.manager.checkpoints):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as error:  # noqa: BLE001 - readers fail in many ways (OpError, IndexError, ...)
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying the one before it",
                    path,
                    str(error).strip().splitlines()[0],
                )
                continue
            logging.info(
                "Resumed %s at step %d (epoch %d, batch %d)",
                path,
                int(self.step),
                int(self.epoch),
                int(self.batch_in_epoch),
            )
            return
        if self.manager.checkpoints:
            raise UserError(
                f"no checkpoint in {run_directory.checkpoint_dir(train.train_dir)} is readable; "
                f"move that folder away to start over, or use a new --train_dir"
            )
        if train.init_from:
            path = run_directory.restore_weights(train.init_from, self.model)
            logging.info("Initialized weights from %s", path)

    def evaluate(self):
        """Mean validation nats/char over the stream layout, leaving the training state untouched."""
        states = model_lib.state_variables(self.model)
        saved = [tf.identity(v) for v in states]
        model_lib.reset_states(self.model)
        total = 0.0
        for inputs, targets in self.val_dataset:
            total += float(self.eval_step(inputs, targets))
        for variable, value in zip(states, saved, strict=True):
            variable.assign(value)
        return total / self.val_batches

    def sample_text(self):
        """A short seeded sample from the current weights, for TensorBoard."""
        model_lib.copy_weights(self.model, self.sampler.model)
        prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[0]
        return self.sampler.generate(
            self.vocab, prime, self.config.train.sample_length, seed=self.config.train.seed, temperature=0.8
        )[0]

    def save(self):
        """Saves a checkpoint of the current step unless the latest already is one."""
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(f"-{int(self.step)}"):
            return self.manager.latest_checkpoint
        return self.manager.save(checkpoint_number=self.step)


def train(config):
    """Trains (or resumes) the run described by `config` until its last step.

    Re-running with the same train_dir resumes from the latest checkpoint. SIGINT (Ctrl-C) and
    SIGTERM, received in the main thread, finish the current step, save a checkpoint and return.

    Args:
      config: RunConfig; model.vocab_size is derived from the corpus.

    Returns:
      TrainResult.
    """
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    vocab, train_ids, val_ids, config = prepare_data(config)
    _prepare_run_dir(config, vocab)
    trainer = Trainer(config, vocab, train_ids, val_ids)
    trainer.restore_or_initialize()
    with _StopOnSignal() as stop:
        return _run_loop(trainer, stop)


class _StopOnSignal:
    """Context manager: SIGINT/SIGTERM set `.signal` instead of interrupting (main thread only)."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        self.signal = signum

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _write_hparams(config, writer):
    flat = {}
    for section in (config.data, config.model, config.train):
        flat.update(dataclasses.asdict(section))
    with writer.as_default():
        hparams_api.hparams(flat)


def _run_loop(trainer, stop):
    config = trainer.config
    data, train = config.data, config.train
    train_writer = tf.summary.create_file_writer(run_directory.log_dir(train.train_dir, "train"))
    val_writer = tf.summary.create_file_writer(run_directory.log_dir(train.train_dir, "val"))
    if int(trainer.step) == 0:
        _write_hparams(config, train_writer)
    chars_per_step = data.batch_size * data.seq_length
    step_losses, window_losses, window_norms = [], [], []
    val_loss = math.nan
    start_step = int(trainer.step)
    train_seconds = window_seconds = 0.0  # time spent in training steps only, not eval or saving
    logging.info(
        "Training %d steps (%d per epoch) from step %d in %s",
        trainer.total_steps,
        trainer.steps_per_epoch,
        start_step,
        train.train_dir,
    )
    batches = data_lib.training_dataset(
        trainer.train_ids,
        data.batch_size,
        data.seq_length,
        trainer.steps_per_epoch,
        train.seed,
        data.random_offset,
        int(trainer.epoch),
        int(trainer.batch_in_epoch),
    )
    for epoch, batch_index, inputs, targets in batches:
        step, epoch, batch_index = int(trainer.step), int(epoch), int(batch_index)
        if step >= trainer.total_steps or stop.signal is not None:
            break
        if batch_index == 0:
            model_lib.reset_states(trainer.model)
        started = time.perf_counter()
        lr = schedules.learning_rate(train, step, epoch, trainer.total_steps)
        trainer.optimizer.learning_rate.assign(lr)
        loss, grad_norm = trainer.train_step(inputs, targets)
        loss, grad_norm = float(loss), float(grad_norm)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            # Raised before anything is saved: the newest checkpoint on disk stays the last good one.
            raise UserError(
                f"training diverged at step {step + 1} (loss {loss}, gradient norm {grad_norm}); "
                f"the last good checkpoint is kept: lower --learning_rate or --grad_clip and re-run"
            )
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        window_seconds += elapsed
        step += 1
        trainer.step.assign(step)
        # The data position of the next batch.
        if batch_index + 1 == trainer.steps_per_epoch:
            trainer.epoch.assign(epoch + 1)
            trainer.batch_in_epoch.assign(0)
        else:
            trainer.epoch.assign(epoch)
            trainer.batch_in_epoch.assign(batch_index + 1)
        step_losses.append(loss)
        window_losses.append(loss)
        window_norms.append(grad_norm)
        if step % train.log_every == 0 or step == trainer.total_steps:
            chars_per_sec = len(window_losses) * chars_per_step / window_seconds
            mean_loss = float(np.mean(window_losses))
            with train_writer.as_default(step=step):
                tf.summary.scalar("loss", mean_loss)
                tf.summary.scalar("bits_per_char", losses.bits_per_char(mean_loss))
                tf.summary.scalar("learning_rate", lr)
                tf.summary.scalar("grad_norm", float(np.mean(window_norms)))
                tf.summary.scalar("chars_per_sec", chars_per_sec)
            eta = (trainer.total_steps - step) * train_seconds / (step - start_step)
            logging.info(
                "step %d/%d | epoch %d (%.2f) | loss %.4f | val %s | %s chars/s | ETA %s",
                step,
                trainer.total_steps,
                epoch + 1,
                step / trainer.steps_per_epoch,
                mean_loss,
                "-" if math.isnan(val_loss) else f"{val_loss:.4f}",
                f"{chars_per_sec:,.0f}",
                _format_duration(eta),
            )
            window_losses, window_norms, window_seconds = [], [], 0.0
        if trainer.val_batches and (step % train.eval_every == 0 or step == trainer.total_steps):
            val_loss = _evaluate_and_log(trainer, val_writer, step)
        if step % train.ckpt_every == 0:
            trainer.save()
        if step >= trainer.total_steps or stop.signal is not None:
            break
    if stop.signal is not None:
        logging.warning(
            "Stopped by signal %d at step %d; re-run the same command to resume",
            stop.signal,
            int(trainer.step),
        )
    last_checkpoint = trainer.save()
    train_writer.flush()
    val_writer.flush()
    return TrainResult(
        step=int(trainer.step),
        losses=step_losses,
        best_val_loss=float(trainer.best_val_loss),
        last_checkpoint=last_checkpoint,
        stopped_by_signal=stop.signal,
    )


def _evaluate_and_log(trainer, writer, step):
    """Evaluates, writes the val summaries and keeps the best-val checkpoint; returns the val loss."""
    val_loss = trainer.evaluate()
    with writer.as_default(step=step):
        tf.summary.scalar("loss", val_loss)
        tf.summary.scalar("bits_per_char", losses.bits_per_char(val_loss))
        tf.summary.scalar("perplexity", losses.perplexity(val_loss))
        if trainer.sampler is not None:
            tf.summary.text("sample", trainer.sample_text())
    writer.flush()
    logging.info(
        "step %d | val loss %.4f nats/char | %.4f bits/char | perplexity %.3f",
        step,
        val_loss,
        losses.bits_per_char(val_loss),
        losses.perplexity(val_loss),
    )
    if val_loss < float(trainer.best_val_loss):
        trainer.best_val_loss.assign(val_loss)
        trainer.best_manager.save(checkpoint_number=step)
    return val_loss
