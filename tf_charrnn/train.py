"""The training loop: compiled steps over stream batches, evaluation, checkpoints and resume, summaries."""

import dataclasses
import math
import os
import shutil
import signal
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams_api

from tf_charrnn import data as data_lib
from tf_charrnn import distribute, losses, run_directory, sampling, schedules
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


# Longer windows unroll into graphs that take too long to trace.
MAX_UNROLLED_SEQ_LENGTH = 256


def _unroll_on_this_machine(strategy, seq_length):
    """Unroll the recurrence on CPUs (where the loop's per-step overhead is a large part of a step),
    never where cuDNN or a TPU compiler does better with the loop."""
    on_cpu = not tf.config.list_physical_devices("GPU") and not isinstance(
        strategy, tf.distribute.TPUStrategy
    )
    return on_cpu and seq_length <= MAX_UNROLLED_SEQ_LENGTH


def _fused_kernels_on_this_machine(strategy, jit_compile):
    """The fused C++ LSTM kernels run on CPUs, and neither XLA nor a TPU can run custom ops (on a GPU
    the layer picks cuDNN by itself)."""
    return not jit_compile and not isinstance(strategy, tf.distribute.TPUStrategy)


class Trainer:
    """Holds the strategy, model, optimizer, compiled steps and run state of one training call.

    Under a tf.distribute strategy each replica holds config.data.batch_size / replicas contiguous
    streams (see `distribute`); the model and optimizer live in the strategy's scope, the step
    counters and the [B, H] global copy of the recurrent state outside it.
    """

    def __init__(self, config, vocab, train_ids, val_ids, strategy):
        self.config = config
        self.vocab = vocab
        self.strategy = strategy
        self.is_chief = distribute.is_chief(strategy)
        data, train = config.data, config.train
        self.replicas = strategy.num_replicas_in_sync
        replica_batch = distribute.replica_batch_size(strategy, data.batch_size)
        with strategy.scope():
            self.model = model_lib.build_model(
                config.model,
                replica_batch,
                seed=train.seed,
                dtype_policy=distribute.dtype_policy(train.mixed_precision),
                unroll=_unroll_on_this_machine(strategy, data.seq_length),
                fused_kernels=_fused_kernels_on_this_machine(strategy, train.jit_compile),
            )
            self.optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
            if train.mixed_precision == "float16":
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
        self.states = model_lib.state_variables(self.model)
        # The recurrent state of all B streams, as checkpoints hold it.
        self.global_states = [
            tf.Variable(tf.zeros([data.batch_size, *state.shape[1:]], state.dtype), trainable=False)
            for state in self.states
        ]
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.batch_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="batch_in_epoch")
        self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_val_loss")
        self.checkpoint = run_directory.make_checkpoint(
            self.model,
            self.optimizer,
            recurrent_state=self.global_states,
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            best_val_loss=self.best_val_loss,
        )
        # Every worker saves (saving may need collectives), but only the chief into the run directory.
        self._scratch_dir = None if self.is_chief else tempfile.mkdtemp(prefix="tf_charrnn_worker_")
        self.manager = self._checkpoint_manager(best=False, max_to_keep=train.keep)
        self.best_manager = self._checkpoint_manager(best=True, max_to_keep=1)
        self.train_ids = tf.constant(train_ids)  # compact ids (uint8 for most corpora); batches are int32
        self.steps_per_epoch = data_lib.num_stream_batches(
            len(train_ids), data.batch_size, data.seq_length, data.random_offset
        )
        self.val_batches = (
            data_lib.num_stream_batches(len(val_ids), data.batch_size, data.seq_length)
            if data.val_fraction > 0
            else 0
        )
        self.val_dataset = (
            distribute.distribute_streams(
                strategy,
                data.batch_size,
                lambda first_row, num_rows: data_lib.stream_dataset(
                    val_ids,
                    data.batch_size,
                    data.seq_length,
                    self.val_batches,
                    first_row=first_row,
                    num_rows=num_rows,
                ),
            )
            if self.val_batches
            else None
        )
        self.total_steps = train.max_steps or train.num_epochs * self.steps_per_epoch
        self.sampler = sampling.Sampler(config.model) if train.sample_length and self.is_chief else None
        # XLA compiles the whole step on one device; across devices, each replica's forward/backward.
        single_device = distribute.is_default(strategy)
        self._replica_gradients = tf.function(
            self._gradients, jit_compile=train.jit_compile and not single_device
        )
        self.train_step = tf.function(self._train_step, jit_compile=train.jit_compile and single_device)
        self.eval_step = tf.function(self._eval_step, jit_compile=train.jit_compile and single_device)
        self._gather_states = tf.function(
            lambda: distribute.gather_states(strategy, self.states, self.global_states)
        )
        self._scatter_states = tf.function(
            lambda: distribute.scatter_states(strategy, self.states, self.global_states)
        )

    def _checkpoint_manager(self, best, max_to_keep):
        directory = run_directory.checkpoint_dir(self.config.train.train_dir, best)
        if not self.is_chief:
            directory = os.path.join(
                self._scratch_dir, os.path.relpath(directory, self.config.train.train_dir)
            )
        return tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep, step_counter=self.step
        )

    def training_batches(self):
        """The distributed training batches from the current data position, epoch after epoch."""
        data = self.config.data
        return distribute.distribute_streams(
            self.strategy,
            data.batch_size,
            lambda first_row, num_rows: data_lib.training_dataset(
                self.train_ids,
                data.batch_size,
                data.seq_length,
                self.steps_per_epoch,
                self.config.train.seed,
                data.random_offset,
                int(self.epoch),
                int(self.batch_in_epoch),
                first_row=first_row,
                num_rows=num_rows,
            ),
        )

    def _loss_scale(self):
        return self.optimizer.dynamic_scale if self.config.train.mixed_precision == "float16" else 1.0

    def _gradients(self, inputs, targets):
        """This replica's share of the global mean loss, and its (loss-scaled) gradients."""
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=True)
            loss = losses.sequence_loss(targets, logits) / self.replicas
            scaled_loss = self.optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, self.model.trainable_variables)

    def _replica_train_step(self, inputs, targets, stop):
        context = tf.distribute.get_replica_context()
        loss, grads = self._replica_gradients(inputs, targets)
        # Clip the global gradient, as one device would; the optimizer then sums over replicas again.
        # `stop` rides along, so a signal to any worker stops every worker after the same step.
        stop = tf.identity(stop)  # a value of this replica's, as all_reduce needs
        loss, grads, stop = context.all_reduce(tf.distribute.ReduceOp.SUM, (loss, grads, stop))
        scale = self._loss_scale()
        grads, grad_norm = tf.clip_by_global_norm(grads, self.config.train.grad_clip * scale)
        if self.replicas > 1:
            # The optimizer sums the gradients over replicas once more; only the first replica's count.
            # (Zeroing rather than dividing by the replicas keeps the embedding's IndexedSlices, whose
            # per-slice squares Adam sums, the same as on one device.)
            first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32)
            grads = [tf.math.scalar_mul(first, grad) for grad in grads]
        self.optimizer.apply(grads, self.model.trainable_variables)
        return loss, grad_norm / scale, stop

    def _train_step(self, inputs, targets, stop):
        """One step on every replica.

        Args:
          inputs, targets: distributed int32 batches.
          stop: float32 scalar, > 0 when this worker was asked to stop.

        Returns:
          (loss, gradient norm, stop summed over all replicas), the same on every worker.
        """
        results = self.strategy.run(self._replica_train_step, args=(inputs, targets, stop))
        return tuple(self.first_replica(value) for value in results)

    def _replica_eval_step(self, inputs, targets):
        loss = losses.sequence_loss(targets, self.model(inputs, training=False)) / self.replicas
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, loss)

    def _eval_step(self, inputs, targets):
        return self.first_replica(self.strategy.run(self._replica_eval_step, args=(inputs, targets)))

    def first_replica(self, value):
        """The value every replica holds after an all-reduce, from the first local one."""
        return self.strategy.experimental_local_results(value)[0]

    def restore_or_initialize(self):
        """Resumes from the newest readable checkpoint, or loads --init_from weights into a fresh run.

        An unreadable checkpoint (truncated, corrupted) is skipped with a warning for the one before it.
        """
        train = self.config.train
        directory = run_directory.checkpoint_dir(train.train_dir)
        state = tf.train.get_checkpoint_state(directory)
        checkpoints = list(state.all_model_checkpoint_paths) if state else []
        for path in reversed(checkpoints):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as error:  # noqa: BLE001 - readers fail in many ways (OpError, IndexError, ...)
                logging.warning(
                    "Checkpoint %s is unreadable (%s); trying the one before it",
                    path,
                    str(error).strip().splitlines()[0],
                )
                continue
            self._scatter_states()
            logging.info(
                "Resumed %s at step %d (epoch %d, batch %d)",
                path,
                int(self.step),
                int(self.epoch),
                int(self.batch_in_epoch),
            )
            return
        if checkpoints:
            raise UserError(
                f"no checkpoint in {directory} is readable; "
                f"move that folder away to start over, or use a new --train_dir"
            )
        if train.init_from:
            path = run_directory.restore_weights(train.init_from, self.model)
            logging.info("Initialized weights from %s", path)

    def evaluate(self):
        """Mean validation nats/char over the stream layout, leaving the training state untouched."""
        self._gather_states()
        model_lib.reset_states(self.model)
        total = 0.0
        for inputs, targets in self.val_dataset:
            total += float(self.eval_step(inputs, targets))
        self._scatter_states()
        return total / self.val_batches

    def sample_text(self):
        """A short seeded sample from the current weights, for TensorBoard."""
        model_lib.copy_weights(self.model, self.sampler.model)
        prime = "\n" if "\n" in self.vocab.chars else self.vocab.chars[0]
        return self.sampler.generate(
            self.vocab, prime, self.config.train.sample_length, seed=self.config.train.seed, temperature=0.8
        )[0]

    def save(self, best=False):
        """Saves a checkpoint of the current step (into checkpoints/best/ with `best`) unless the
        latest already is one; returns its path in the run directory (which the chief writes)."""
        manager = self.best_manager if best else self.manager
        if not (manager.latest_checkpoint and manager.latest_checkpoint.endswith(f"-{int(self.step)}")):
            self._gather_states()
            manager.save(checkpoint_number=self.step)
        directory = run_directory.checkpoint_dir(self.config.train.train_dir, best)
        return os.path.join(directory, os.path.basename(manager.latest_checkpoint))

    def close(self):
        """Removes a non-chief worker's scratch checkpoints."""
        if self._scratch_dir:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)


def train(config):
    """Trains (or resumes) the run described by `config` until its last step.

    Re-running with the same train_dir resumes from the latest checkpoint. SIGINT (Ctrl-C) and
    SIGTERM, received in the main thread, finish the current step, save a checkpoint and return.

    Args:
      config: RunConfig; model.vocab_size is derived from the corpus.

    Returns:
      TrainResult.
    """
    strategy = distribute.make_strategy(config.train.strategy, config.train.tpu)  # before any other op
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    vocab, train_ids, val_ids, config = prepare_data(config)
    if distribute.is_chief(strategy):
        _prepare_run_dir(config, vocab)
    trainer = Trainer(config, vocab, train_ids, val_ids, strategy)
    try:
        trainer.restore_or_initialize()
        with _StopOnSignal() as stop:
            return _run_loop(trainer, stop)
    finally:
        trainer.close()


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
    if trainer.is_chief:
        train_writer = tf.summary.create_file_writer(run_directory.log_dir(train.train_dir, "train"))
        val_writer = tf.summary.create_file_writer(run_directory.log_dir(train.train_dir, "val"))
    else:
        train_writer = val_writer = tf.summary.create_noop_writer()
    if int(trainer.step) == 0:
        _write_hparams(config, train_writer)
    chars_per_step = data.batch_size * data.seq_length
    step_losses, window_losses, window_norms = [], [], []
    val_loss = math.nan
    start_step = int(trainer.step)
    train_seconds = window_seconds = 0.0  # time spent in training steps only, not eval or saving
    logging.info(
        "Training %d steps (%d per epoch) from step %d in %s with %d replica(s) (--strategy=%s)",
        trainer.total_steps,
        trainer.steps_per_epoch,
        start_step,
        train.train_dir,
        trainer.replicas,
        train.strategy,
    )
    for epoch, batch_index, inputs, targets in trainer.training_batches():
        step = int(trainer.step)
        epoch, batch_index = (int(trainer.first_replica(value)) for value in (epoch, batch_index))
        if step >= trainer.total_steps:
            break
        if batch_index == 0:
            model_lib.reset_states(trainer.model)
        started = time.perf_counter()
        lr = schedules.learning_rate(train, step, epoch, trainer.total_steps)
        trainer.optimizer.learning_rate.assign(lr)
        loss, grad_norm, stop_votes = trainer.train_step(
            inputs, targets, tf.constant(0.0 if stop.signal is None else 1.0)
        )
        loss, grad_norm = float(loss), float(grad_norm)
        # Every worker sees the same votes, so all of them stop after this step (a signal received
        # later is voted on at the next step).
        stopping = float(stop_votes) > 0
        if stopping and stop.signal is None:
            logging.warning("Another worker was stopped by a signal; stopping with it")
            stop.signal = signal.SIGTERM
        # With float16 loss scaling an overflowing gradient is expected: the optimizer skips that step.
        if not (math.isfinite(loss) and (math.isfinite(grad_norm) or train.mixed_precision == "float16")):
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
        if step >= trainer.total_steps or stopping:
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
        trainer.save(best=True)
    return val_loss
