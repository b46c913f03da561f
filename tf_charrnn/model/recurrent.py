"""The recurrent layers a Char-RNN stacks, by --cell. Each is a Keras recurrent layer that also steps
one character with explicit state, for sampling and export:

    num_states                   S, the state tensors of one layer (LSTM: h and c)
    step_weights()               its weights as tensors, read once before a loop of steps
    step(inputs, states, weights) -> (outputs [B, H], states [S, B, H])
    implementation(), step_implementation(precision)   what runs the loop and the step (fused_lstm's names)

The LSTM is `fused_lstm.FusedLSTM` (fused C++ kernels on a CPU); GRU and simple RNN step with their
Keras cells, which read their own variables.
"""

from typing import Any

import keras
import tensorflow as tf

from tf_charrnn.model.fused_lstm import KERAS_OPS, FusedLSTM


class _KerasCellStep:
    """`step` through the layer's own Keras cell."""

    num_states = 1
    cell: Any  # the Keras layer's cell

    def implementation(self, mask: tf.Tensor | None = None) -> str:
        del mask
        return KERAS_OPS

    def step_implementation(self, precision: str = "float32") -> str:
        del precision
        return KERAS_OPS

    def step_kernel_missing(self, precision: str) -> str:
        del precision
        return "the step kernel, which runs LSTM layers only"

    def step_weights(self) -> None:
        return None

    def step(self, inputs: tf.Tensor, states: tf.Tensor, weights: None) -> tuple[tf.Tensor, tf.Tensor]:
        del weights  # the cell reads its variables
        outputs, new_states = self.cell(inputs, tf.unstack(states, num=self.num_states), training=False)
        return outputs, tf.stack(tf.nest.flatten(new_states))


@keras.saving.register_keras_serializable(package="tf_charrnn")
class GRU(_KerasCellStep, keras.layers.GRU):
    """keras.layers.GRU with a one-character `step`."""


@keras.saving.register_keras_serializable(package="tf_charrnn")
class SimpleRNN(_KerasCellStep, keras.layers.SimpleRNN):
    """keras.layers.SimpleRNN with a one-character `step`."""


def make_layer(cell: str, units: int, use_kernels: bool, **kwargs: Any) -> keras.layers.RNN:
    """The recurrent layer for --cell; `use_kernels` reaches the LSTM (the only cell with kernels)."""
    if cell == "lstm":
        return FusedLSTM(units, use_kernels=use_kernels, **kwargs)
    return {"gru": GRU, "rnn": SimpleRNN}[cell](units, **kwargs)
