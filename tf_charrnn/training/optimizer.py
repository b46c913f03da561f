"""Adam as the run's config asks for it: Keras' epsilon-hat form, or PyTorch's (the epsilon added to
the bias-corrected sqrt(v-hat), Kingma and Ba's Algorithm 1)."""

import keras
from keras import ops

from tf_charrnn.config import OptimizationConfig


class BiasCorrectedEpsilonAdam(keras.optimizers.Adam):
    """Adam whose epsilon is added to sqrt(v / (1 - b2^t)), as in PyTorch's `torch.optim.Adam` and
    optax's `adam`.

    Keras' Adam adds epsilon to sqrt(v) and folds the bias correction into the rate, so its epsilon acts
    like this one's times 1 / sqrt(1 - b2^t): 31.6x at the first step, 3.2x at the 100th. Here it is
    scaled by sqrt(1 - b2^t) in Keras' form, which is PyTorch's update written with one rate scalar.
    """

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


def make_optimizer(config: OptimizationConfig) -> keras.optimizers.Adam:
    """The run's Adam: `config.adam_beta2`, and `config.adam_epsilon` added where `config.adam_epsilon_form`
    says."""
    adam = BiasCorrectedEpsilonAdam if config.adam_epsilon_form == "pytorch" else keras.optimizers.Adam
    return adam(learning_rate=config.learning_rate, beta_2=config.adam_beta2, epsilon=config.adam_epsilon)
