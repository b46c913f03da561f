"""An LSTM layer whose CPU time loop runs in the fused C++ kernels: the same weights, math and state as
keras.layers.LSTM, about twice as fast per layer on a CPU.

The input projection x W is one large matmul; the kernel CharRnnLstmSequence runs the recurrence
(tf_charrnn/kernels/lstm_sequence.cc); the gradient runs the recurrence backwards in
CharRnnLstmSequenceGrad (which also sums the bias gradient) and forms the other weight and input
gradients as three large matmuls. Where the kernels do not apply (a GPU, where cuDNN is faster; a
mask, dropout inside the cell, a non-float32 compute dtype, units not a multiple of 64, kernels not
built) the layer is keras.layers.LSTM.
"""

import keras
import tensorflow as tf

from tf_charrnn import native

KERNEL_UNITS_MULTIPLE = 64


def lstm_sequence(kernels, inputs, h0, c0, kernel, recurrent_kernel, bias):
    """One LSTM layer over a sequence, with the fused kernels.

    Args:
      kernels: the module `native.load()` returns.
      inputs: float32 [B, T, E]; h0, c0: float32 [B, H]; kernel [E, 4H], recurrent_kernel [H, 4H],
        bias [4H]: Keras LSTMCell's weights (gates i, f, c, o).

    Returns:
      (h, c): float32 [B, T, H] each, the hidden and cell state after every step.
    """

    @tf.custom_gradient
    def forward(inputs, h0, c0, kernel, recurrent_kernel, bias):
        batch, time, features = tf.unstack(tf.shape(inputs))
        flat_inputs = tf.reshape(inputs, [-1, features])
        xw = tf.reshape(tf.matmul(flat_inputs, kernel), [batch, time, -1])
        h, c, gates = kernels.char_rnn_lstm_sequence(xw, h0, c0, recurrent_kernel, bias)

        def gradient(dh, dc):
            # An output nothing depended on (e.g. c, which only feeds the state variables) has no gradient.
            dh = tf.zeros_like(h) if dh is None else dh
            dc = tf.zeros_like(c) if dc is None else dc
            dz, dh0, dc0, dbias = kernels.char_rnn_lstm_sequence_grad(dh, dc, gates, c, c0, recurrent_kernel)
            flat_dz = tf.reshape(dz, [batch * time, -1])
            h_before = tf.reshape(tf.concat([h0[:, None], h[:, :-1]], axis=1), [batch * time, -1])
            return (
                tf.reshape(tf.matmul(flat_dz, kernel, transpose_b=True), tf.shape(inputs)),
                dh0,
                dc0,
                tf.matmul(flat_inputs, flat_dz, transpose_a=True),
                tf.matmul(h_before, flat_dz, transpose_a=True),
                dbias,
            )

        return (h, c), gradient

    return forward(inputs, h0, c0, kernel, recurrent_kernel, bias)


@keras.saving.register_keras_serializable(package="tf_charrnn")
class FusedLSTM(keras.layers.LSTM):
    """keras.layers.LSTM with the fused CPU kernels where they apply (see the module docstring).

    Args:
      use_kernels: False keeps keras.layers.LSTM's loop (e.g. for XLA, which cannot compile custom ops).
      **kwargs: keras.layers.LSTM's.
    """

    def __init__(self, units, use_kernels=True, **kwargs):
        super().__init__(units, **kwargs)
        self.use_kernels = use_kernels

    def get_config(self):
        return {**super().get_config(), "use_kernels": self.use_kernels}

    def _kernels(self, mask):
        """The kernel module where it applies to this call, else None."""
        cell = self.cell
        applies = (
            self.use_kernels
            and mask is None
            and not self.go_backwards
            and not cell.dropout
            and not cell.recurrent_dropout
            and cell.use_bias
            and self.compute_dtype == "float32"
            and self.units % KERNEL_UNITS_MULTIPLE == 0
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and not tf.config.list_logical_devices("GPU")
        )
        return native.load() if applies else None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        kernels = self._kernels(keras.tree.flatten(mask)[0] if keras.tree.is_nested(mask) else mask)
        if kernels is None:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        cell = self.cell
        h, c = lstm_sequence(
            kernels,
            sequences,
            initial_state[0],
            initial_state[1],
            cell.kernel.value,
            cell.recurrent_kernel.value,
            cell.bias.value,
        )
        return h[:, -1], h, [h[:, -1], c[:, -1]]
