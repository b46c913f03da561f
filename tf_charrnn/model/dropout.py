"""Dropout on the embeddings and between the recurrent layers: keras.layers.Dropout, on a fused C++ kernel
where the LSTM's kernels run (kernels/dropout.cc).

The kernel draws the same Philox stream as tf.nn.experimental.stateless_dropout (what Keras' Dropout runs
on TensorFlow) from the same seed, and so keeps and scales exactly the same elements: a run's losses are
those of Keras' Dropout bit for bit. It does in one pass, 16 random counters at a time, what TensorFlow
does in four ops forward (random numbers, compare, multiply, select) and two backward.
"""

from collections.abc import Callable
from types import ModuleType
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.tensorflow.random import _cast_seed  # no public name: Keras' seed as TensorFlow's
from keras.src.random.seed_generator import draw_seed  # no public name: the draw keras.random.dropout makes

from tf_charrnn.model import native

# The dtypes the kernel takes.
KERNEL_DTYPES = ("float32", "bfloat16")


@keras.saving.register_keras_serializable(package="tf_charrnn")
class FusedDropout(keras.layers.Dropout):
    """keras.layers.Dropout on the fused kernel where it applies (the same values either way).

    Args:
      rate: the fraction of inputs dropped, as keras.layers.Dropout's.
      use_kernels: run on the fused kernel where it applies (no noise_shape, a float32 or bfloat16 input,
        the kernels built); the runtime decides, as for the LSTM layers (False on a GPU and under XLA).
      **kwargs: keras.layers.Dropout's.
    """

    def __init__(self, rate: float, use_kernels: bool = False, **kwargs: Any) -> None:
        super().__init__(rate, **kwargs)
        self.use_kernels = use_kernels

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "use_kernels": self.use_kernels}

    def kernels(self, inputs: tf.Tensor) -> ModuleType | None:
        """The kernel module where it applies to `inputs`, else None."""
        applies = (
            self.use_kernels
            and self.noise_shape is None
            and 0 < self.rate < 1
            and keras.backend.standardize_dtype(inputs.dtype) in KERNEL_DTYPES
        )
        return native.load() if applies else None

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        kernels = self.kernels(inputs)
        if not training or kernels is None:
            return super().call(inputs, training=training)
        return dropout(kernels, inputs, self.rate, _cast_seed(draw_seed(self.seed_generator)))


def dropout(kernels: ModuleType, inputs: tf.Tensor, rate: float, seed: tf.Tensor) -> tf.Tensor:
    """tf.nn.experimental.stateless_dropout(inputs, rate, seed=seed) on the fused kernel.

    Args:
      kernels: the module `native.load()` returns.
      inputs: float32 or bfloat16, any shape.
      rate: the fraction dropped, in (0, 1).
      seed: int32 [2], as stateless_dropout takes it.
    """
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    # The threshold and scale as stateless_dropout makes them: Python floats as tensors of x's dtype.
    threshold = tf.constant(rate, inputs.dtype)
    scale = tf.constant(1 / (1 - rate), inputs.dtype)

    @tf.custom_gradient
    def forward(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        y, keep = kernels.char_rnn_dropout(x, key, counter, threshold, scale)
        return y, lambda dy: kernels.char_rnn_dropout_grad(dy, keep, scale)

    return forward(inputs)
