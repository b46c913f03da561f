"""Adam as the run's config asks for it: Keras' epsilon-hat form, or PyTorch's (the epsilon added to
the bias-corrected sqrt(v-hat), Kingma and Ba's Algorithm 1); on the fused kernels, the whole update in
one op for the dense gradients and one per IndexedSlices gradient, bit for bit Keras' arithmetic."""

from types import ModuleType
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from tf_charrnn.config import OptimizationConfig


class Adam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose update runs, where `kernels` (the module `native.load()` returns) is
    given, in CharRnnAdam and CharRnnAdamSlices (tf_charrnn/model/kernels/adam.cc): Keras' twenty or so
    ops per variable become one op for all dense gradients and one per IndexedSlices gradient (an
    Embedding's), with the same float32 operations in the same order, so the weights are Keras' bit for
    bit. Elsewhere (no kernels, a tf.distribute strategy, amsgrad, a variable not float32) it is Keras'
    Adam unchanged.
    """

    def __init__(self, *, kernels: ModuleType | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kernels = kernels

    def _epsilon(self, correction_2: tf.Tensor) -> tf.Tensor:
        """What is added to sqrt(v); `correction_2` = sqrt(1 - beta_2^t). Keras' form: epsilon."""
        del correction_2
        return ops.cast(self.epsilon, "float32")

    def _backend_update_step(
        self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any
    ) -> None:
        kernels = self._kernels
        fusable = (
            not self.amsgrad
            and not tf.distribute.has_strategy()
            and all(variable.dtype == "float32" for variable in trainable_variables)
            and all(_fusable(grad) for grad in grads)
        )
        if kernels is None or not fusable:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        # The scalars as update_step computes them, once for all variables.
        local_step = ops.cast(self.iterations + 1, "float32")
        beta_1_power = ops.power(ops.cast(self.beta_1, "float32"), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, "float32"), local_step)
        correction_2 = ops.sqrt(1 - beta_2_power)
        alpha = ops.cast(learning_rate, "float32") * correction_2 / (1 - beta_1_power)
        scalars = (
            alpha,
            self._epsilon(correction_2),
            tf.constant(1 - self.beta_1, tf.float32),  # as Keras multiplies by the Python float
            tf.constant(1 - self.beta_2, tf.float32),
        )
        dense = []
        for grad, variable in zip(grads, trainable_variables, strict=True):
            index = self._get_variable_index(variable)
            slots = (self._momentums[index], self._velocities[index], variable)
            if isinstance(grad, tf.IndexedSlices):
                values = kernels.char_rnn_adam_slices(
                    *scalars, grad.values, grad.indices, *(slot.value for slot in slots)
                )
                for slot, value in zip(slots, values, strict=True):
                    self.assign(slot, value)
            else:
                dense.append((grad, slots))
        if dense:
            m, v, x = kernels.char_rnn_adam(
                *scalars,
                [grad for grad, _ in dense],
                *([slots[k].value for _, slots in dense] for k in range(3)),
            )
            for (_, slots), *values in zip(dense, m, v, x, strict=True):
                for slot, value in zip(slots, values, strict=True):
                    self.assign(slot, value)


def _fusable(grad: Any) -> bool:
    if isinstance(grad, tf.IndexedSlices):
        return grad.values.dtype == tf.float32 and grad.values.shape.rank == 2
    return isinstance(grad, tf.Tensor) and grad.dtype == tf.float32


class BiasCorrectedEpsilonAdam(Adam):
    """Adam whose epsilon is added to sqrt(v / (1 - b2^t)), as in PyTorch's `torch.optim.Adam` and
    optax's `adam`.

    Keras' Adam adds epsilon to sqrt(v) and folds the bias correction into the rate, so its epsilon acts
    like this one's times 1 / sqrt(1 - b2^t): 31.6x at the first step, 3.2x at the 100th. Here it is
    scaled by sqrt(1 - b2^t) in Keras' form, which is PyTorch's update written with one rate scalar.
    """

    def _epsilon(self, correction_2: tf.Tensor) -> tf.Tensor:
        return ops.cast(self.epsilon, "float32") * correction_2

    def update_step(self, gradient, variable, learning_rate):  # type: ignore[no-untyped-def]
        """Update step given gradient and the associated model variable."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        correction_2 = ops.sqrt(1 - beta_2_power)
        alpha = lr * correction_2 / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        epsilon = ops.cast(self.epsilon, dtype) * correction_2
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), epsilon)))


def make_optimizer(config: OptimizationConfig, kernels: ModuleType | None = None) -> Adam:
    """The run's Adam: `config.adam_beta2`, `config.adam_epsilon` added where `config.adam_epsilon_form`
    says, and `config.weight_decay` (Keras' decoupled decay, applied before the update) on the weight
    matrices but not on biases or the embedding; its update on `kernels` (the module `native.load()`
    returns) where given."""
    adam = BiasCorrectedEpsilonAdam if config.adam_epsilon_form == "pytorch" else Adam
    optimizer = adam(
        learning_rate=config.learning_rate,
        beta_2=config.adam_beta2,
        epsilon=config.adam_epsilon,
        weight_decay=config.weight_decay or None,
        kernels=kernels,
    )
    if config.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "embeddings"])
    return optimizer
