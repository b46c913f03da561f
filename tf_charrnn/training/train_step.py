"""The compiled training and evaluation steps: the model and Adam in the strategy's scope, forward,
sequence loss, backward, global-norm clipping and the update, on every replica.

Under a tf.distribute strategy each replica holds batch_size / replicas contiguous streams (see
`distribute`) and its own recurrent state; losses and gradients are summed over replicas.
"""

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.model import losses, native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.runtime.placement import Runtime
from tf_charrnn.training.optimizer import make_optimizer
from tf_charrnn.training.weight_average import WeightAverage


def streams_kept(seed: int, step: int, batch_size: int, reset_probability: float) -> np.ndarray:
    """Which of the B streams carry their state into `step` (1.0) and which start from zero (0.0), each
    reset with `reset_probability`: float32 [B], drawn from the seed and the step alone, so that a
    resumed run, any number of replicas and an XLA-compiled step see the same draw."""
    draws = np.random.default_rng([seed % 2**64, step]).random(batch_size)  # --seed may be negative
    return (draws >= reset_probability).astype(np.float32)


class TrainStep:
    """The model, its optimizer and the compiled steps of one training run.

    Args:
      config: RunConfig with model.vocab_size set.
      runtime: runtime.Runtime, the decisions of where and how the steps run.
    """

    def __init__(self, config: RunConfig, runtime: Runtime) -> None:
        self.runtime = runtime
        self.grad_clip = config.optimization.grad_clip
        self.state_reset_probability = config.optimization.state_reset_probability
        self.dropout_from_step = config.optimization.dropout_from_step
        self.seed = config.optimization.seed
        self.batch_size = config.layout.batch_size
        with runtime.strategy.scope():
            self.model = CharRNN(
                config.model,
                runtime.replica_batch_size,
                seed=config.optimization.seed,
                dtype_policy=runtime.dtype_policy,
                unroll=runtime.unroll,
                fused_kernels=runtime.fused_kernels,
            )
            self.optimizer = make_optimizer(
                config.optimization, kernels=native.load() if runtime.fused_kernels else None
            )
            if runtime.loss_scaling:
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            self.optimizer.build(self.model.trainable_variables)
            decay = config.optimization.ema_decay
            self.weight_average = WeightAverage(self.model.trainable_variables, decay) if decay else None
        # XLA compiles the whole step on one device; across devices, each replica's forward/backward.
        per_replica_jit = runtime.jit_compile and not runtime.single_device
        whole_step_jit = runtime.jit_compile and runtime.single_device
        self._replica_gradients = tf.function(self._gradients, jit_compile=per_replica_jit, autograph=False)
        self._train = tf.function(self._train_step, jit_compile=whole_step_jit, autograph=False)
        self._evaluate = tf.function(self._eval_step, jit_compile=whole_step_jit, autograph=False)
        self._batch_loss = tf.function(self._replica_loss, jit_compile=whole_step_jit, autograph=False)
        self._evaluate_batches = tf.function(self._eval_batches, autograph=False)

    def train(
        self, inputs: tf.Tensor, targets: tf.Tensor, learning_rate: float, stop: bool = False, step: int = 0
    ) -> dict[str, tf.Tensor]:
        """One training step on every replica.

        Args:
          inputs, targets: int32 batches (distributed under a strategy).
          learning_rate: float, the rate of this step.
          stop: whether this worker was asked to stop; voted on with every other worker's.
          step: the run's step number: with the seed, it draws which streams start from a zero state
            (--state_reset_probability), so a resumed run draws the same; and whether dropout applies
            (--dropout_from_step: one trace of the step without dropout, one with it).

        Returns:
          {"loss": float32 scalar, "grad_norm": float32 scalar (before clipping, unscaled),
           "stop_votes": float32 scalar, > 0 when any worker was asked to stop}, the same on every worker.
        """
        kept = streams_kept(self.seed, step, self.batch_size, self.state_reset_probability)
        scalars = tf.constant([learning_rate, 1.0 if stop else 0.0, step + 1.0], tf.float32)
        return self._train(inputs, targets, scalars, tf.constant(kept), step >= self.dropout_from_step)

    def evaluate(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """The mean loss of one batch on every replica, carrying the model's state: float32 scalar. One call
        a batch, with an all-reduce each: the plain form that `evaluate_batches` (what validation runs)
        must equal bit for bit, and the tests hold it to."""
        return self._evaluate(inputs, targets)

    def evaluate_batches(self, batches: Any, count: int) -> np.ndarray:
        """The mean loss of each of the next `count` batches of the distributed iterator `batches`, as
        `evaluate` gives it, in one call (no Python between batches): float32 [count]."""
        return self._evaluate_batches(batches, tf.constant(count, tf.int32)).numpy()

    def _loss_scale(self) -> tf.Tensor | float:
        return self.optimizer.dynamic_scale if self.runtime.loss_scaling else 1.0

    def _gradients(
        self, inputs: tf.Tensor, targets: tf.Tensor, kept: tf.Tensor, dropout: bool
    ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """This replica's share of the global mean loss, and its (loss-scaled) gradients, its streams
        that `kept` marks 0 started from a zero state, with or without dropout (nothing else in the model
        depends on `training`)."""
        if self.state_reset_probability > 0:
            # In the function that reads the state, so that the reads come after the zeroing.
            self._reset_some_streams(kept)
        with tf.GradientTape() as tape:
            logits = self.model(inputs, training=dropout)
            loss = losses.sequence_loss(targets, logits, use_kernels=self.runtime.fused_kernels)
            loss = loss / self.runtime.replicas
            scaled_loss = self.optimizer.scale_loss(loss)
        return loss, tape.gradient(scaled_loss, self.model.trainable_variables)

    def _reset_some_streams(self, kept: tf.Tensor) -> None:
        """Zeroes the state of this replica's streams that `kept` ([B] over all streams) marks 0."""
        rows = self.runtime.replica_batch_size
        first = tf.distribute.get_replica_context().replica_id_in_sync_group * rows
        for state in self.model.state_variables:
            state.assign(state * tf.cast(kept[first : first + rows], state.dtype)[:, tf.newaxis])

    def _replica_train_step(
        self, inputs: tf.Tensor, targets: tf.Tensor, stop: tf.Tensor, kept: tf.Tensor, dropout: bool
    ) -> dict[str, tf.Tensor]:
        context = tf.distribute.get_replica_context()
        loss, grads = self._replica_gradients(inputs, targets, kept, dropout)
        # Clip the global gradient, as one device would; the optimizer then sums over replicas again.
        # `stop` rides along, so a signal to any worker stops every worker after the same step.
        stop = tf.identity(stop)  # a value of this replica's, as all_reduce needs
        loss, grads, stop = context.all_reduce(tf.distribute.ReduceOp.SUM, (loss, grads, stop))
        scale = self._loss_scale()
        grads, grad_norm = tf.clip_by_global_norm(grads, self.grad_clip * scale)
        if self.runtime.replicas > 1:
            # The optimizer sums the gradients over replicas once more; only the first replica's count.
            # (Zeroing rather than dividing by the replicas keeps the embedding's IndexedSlices, whose
            # per-slice squares Adam sums, the same as on one device.)
            first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32)
            grads = [tf.math.scalar_mul(first, grad) for grad in grads]
        self.optimizer.apply(grads, self.model.trainable_variables)
        return {"loss": loss, "grad_norm": grad_norm / scale, "stop_votes": stop}

    def _train_step(
        self, inputs: tf.Tensor, targets: tf.Tensor, scalars: tf.Tensor, kept: tf.Tensor, dropout: bool = True
    ) -> dict[str, tf.Tensor]:
        # The rate, the stop vote and the step count with this step in one tensor: no eager op between steps.
        self.optimizer.learning_rate.assign(scalars[0])
        stop = scalars[1]
        results = self.runtime.strategy.run(
            self._replica_train_step, args=(inputs, targets, stop, kept, dropout)
        )
        if self.weight_average is not None:
            self.weight_average.update(steps_done=scalars[2])
        return {name: self.first_replica(value) for name, value in results.items()}

    def _replica_eval_step(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        loss = self._replica_loss(inputs, targets)
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, loss)

    def _eval_step(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return self.first_replica(self.runtime.strategy.run(self._replica_eval_step, args=(inputs, targets)))

    def _eval_batches(self, batches: Any, count: tf.Tensor) -> tf.Tensor:
        # Each replica's share of each batch's loss, [count, local replicas], then one all-reduce for all
        # the batches (not one per batch: across workers each is a round trip).
        strategy = self.runtime.strategy

        def add_batch(index: tf.Tensor, shares: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            inputs, targets = next(batches)
            share = strategy.run(self._batch_loss, args=(inputs, targets))
            return index + 1, shares.write(index, tf.stack(strategy.experimental_local_results(share)))

        _, shares = tf.while_loop(
            lambda index, _: index < count,
            add_batch,
            (tf.constant(0), tf.TensorArray(tf.float32, size=count)),
        )
        return self.first_replica(strategy.run(self._summed_over_replicas, args=(shares.stack(),)))

    def _replica_loss(self, inputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        return losses.sequence_loss(targets, self.model(inputs, training=False)) / self.runtime.replicas

    def _summed_over_replicas(self, shares: tf.Tensor) -> tf.Tensor:
        context = tf.distribute.get_replica_context()
        local_replica = context.replica_id_in_sync_group % shares.shape[1]
        return context.all_reduce(tf.distribute.ReduceOp.SUM, shares[:, local_replica])

    def first_replica(self, value: Any) -> Any:
        """The value every replica holds after an all-reduce, from the first local one."""
        return self.runtime.strategy.experimental_local_results(value)[0]
