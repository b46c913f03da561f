"""An LSTM layer whose CPU time loop runs in the fused C++ kernels: the same weights, math and state as
keras.layers.LSTM, about twice as fast per layer on a CPU.

The input projection x W is one large matmul; the kernel CharRnnLstmSequence runs the recurrence
(tf_charrnn/model/kernels/lstm_sequence.cc); the gradient runs the recurrence backwards in
CharRnnLstmSequenceGrad (which also sums the bias gradient) and forms the other weight and input gradients
as three large matmuls. Under the mixed_bfloat16 policy the layer runs CharRnnLstmSequenceBf16
(kernels/lstm_sequence_bf16.cc: recurrent products in bfloat16 with float32 accumulation, gates and cell
state in float32) and its three matmuls in bfloat16, where the CPU has AVX512-BF16 and they pay (not on an
Intel CPU without AMX); elsewhere the float32 kernels, its inputs and outputs cast
(`native.bfloat16_kernels()` decides once). The weights stay float32 variables either way. Where the
kernels do not apply (a GPU, where cuDNN is faster; a mask, dropout inside the cell, a float16 compute
dtype, kernels not built) the layer is keras.layers.LSTM. The kernels take units in multiples of 64: a
layer of other units runs on them padded with units that stay exactly zero (`pad_units`) where that
measured faster than Keras' ops (bfloat16 at any size; float32 above 256 units), else on Keras' ops.

The layer also steps one character with explicit state (`step`, for sampling and export):
`lstm_cell_step`, Keras LSTMCell's arithmetic on weight tensors; where the kernels are on, a model runs all
its layers' steps in one CharRnnModelStep call (tf_charrnn/model/kernels/model_step.cc) on the weights
`packed_step_weights` packs, in float32, bfloat16 or int8 (CharRnnModelStepInt8), on units in multiples
of 16, or padded to one with units that stay zero up to PADDED_STEP_MAX_UNITS.
"""

from collections.abc import Callable
from types import ModuleType
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend import AutocastScope  # no public name; reads variables uncast

from tf_charrnn.model import native

KERNEL_UNITS_MULTIPLE = 64
# Float32 layers of other units run padded above this many units (below it Keras' ops were faster).
PADDED_FLOAT32_MIN_UNITS = 256
# The compute dtypes the sequence kernels run in (see the module docstring).
KERNEL_COMPUTE_DTYPES = ("float32", "bfloat16")
# CharRnnModelStep works on blocks of this many units.
STEP_KERNEL_UNITS_MULTIPLE = 16
# Layers of other units step on it padded up to this many units (at 24 to 150 units padded it was 1.2x to 2x
# TensorFlow's ops, at 200 slower: docs/performance.md, "Sampling at units that are not a multiple of 16").
PADDED_STEP_MAX_UNITS = 160
# What runs a layer's time loop or step (`FusedLSTM.implementation`, `step_implementation`; the
# benchmark's rows say it).
FUSED_FLOAT32 = "fused kernels, float32"
FUSED_BFLOAT16 = "fused kernels, bfloat16"
FUSED_INT8 = "fused kernels, int8 weights"
KERAS_OPS = "keras ops"


def lstm_sequence(
    kernels: ModuleType,
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One LSTM layer over a sequence, with the fused kernels.

    Args:
      kernels: the module `native.load()` returns.
      inputs: float32 [B, T, E]; h0, c0: float32 [B, H]; kernel [E, 4H], recurrent_kernel [H, 4H],
        bias [4H]: Keras LSTMCell's weights (gates i, f, c, o).

    Returns:
      (h, c): float32 [B, T, H] each, the hidden and cell state after every step.
    """

    @tf.custom_gradient
    def forward(
        inputs: tf.Tensor,
        h0: tf.Tensor,
        c0: tf.Tensor,
        kernel: tf.Tensor,
        recurrent_kernel: tf.Tensor,
        bias: tf.Tensor,
    ) -> tuple[tuple[tf.Tensor, tf.Tensor], Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]]:
        batch, time, features = tf.unstack(tf.shape(inputs))
        flat_inputs = tf.reshape(inputs, [-1, features])
        xw = tf.reshape(tf.matmul(flat_inputs, kernel), [batch, time, -1])
        h, c, gates = kernels.char_rnn_lstm_sequence(xw, h0, c0, recurrent_kernel, bias)

        def gradient(dh: tf.Tensor | None, dc: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
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

    return _on_padded_units(forward, inputs, h0, c0, kernel, recurrent_kernel, bias)


def lstm_sequence_bfloat16(
    kernels: ModuleType,
    inputs: tf.Tensor,
    h0: tf.Tensor,
    c0: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """One LSTM layer over a sequence, with the bfloat16 fused kernels: x W and the gradient's matmuls in
    bfloat16 (float32 accumulation), the recurrence in CharRnnLstmSequenceBf16.

    Args:
      kernels: the module `native.load()` returns, with `native.BF16_OPS`.
      inputs: bfloat16 [B, T, E]; h0, c0: float32 [B, H]; kernel [E, 4H], recurrent_kernel [H, 4H],
        bias [4H]: Keras LSTMCell's float32 weights (gates i, f, c, o).

    Returns:
      (h bfloat16, c float32): [B, T, H] each, the hidden and cell state after every step.
    """

    @tf.custom_gradient
    def forward(
        inputs: tf.Tensor,
        h0: tf.Tensor,
        c0: tf.Tensor,
        kernel: tf.Tensor,
        recurrent_kernel: tf.Tensor,
        bias: tf.Tensor,
    ) -> tuple[tuple[tf.Tensor, tf.Tensor], Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]]:
        batch, time, features = tf.unstack(tf.shape(inputs))
        flat_inputs = tf.reshape(inputs, [-1, features])
        kernel_bf16 = tf.cast(kernel, tf.bfloat16)
        xw = tf.reshape(tf.matmul(flat_inputs, kernel_bf16), [batch, time, -1])
        h, c, gates = kernels.char_rnn_lstm_sequence_bf16(xw, h0, c0, recurrent_kernel, bias)

        def gradient(dh: tf.Tensor | None, dc: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
            dh = tf.zeros_like(h) if dh is None else tf.cast(dh, tf.bfloat16)
            dc = tf.zeros_like(c) if dc is None else dc
            dz, dh0, dc0, dbias = kernels.char_rnn_lstm_sequence_bf16_grad(
                dh, dc, gates, c, c0, recurrent_kernel
            )
            flat_dz = tf.reshape(dz, [batch * time, -1])
            h0_bf16 = tf.cast(h0, tf.bfloat16)
            h_before = tf.reshape(tf.concat([h0_bf16[:, None], h[:, :-1]], axis=1), [batch * time, -1])
            weight_gradient = tf.matmul(flat_inputs, flat_dz, transpose_a=True)
            recurrent_gradient = tf.matmul(h_before, flat_dz, transpose_a=True)
            return (
                tf.reshape(tf.matmul(flat_dz, kernel_bf16, transpose_b=True), tf.shape(inputs)),
                dh0,
                dc0,
                tf.cast(weight_gradient, tf.float32),
                tf.cast(recurrent_gradient, tf.float32),
                dbias,
            )

        return (h, c), gradient

    return _on_padded_units(forward, inputs, h0, c0, kernel, recurrent_kernel, bias)


def pad_units(
    padding: int, kernel: tf.Tensor, recurrent_kernel: tf.Tensor, bias: tf.Tensor, input_padding: int = 0
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The weights of a layer of H units as one of H + `padding` whose added units stay exactly zero from a
    zero state: zero weights and bias, so their gates are sigmoid(0) and tanh(0), their c stays
    0.5 c + 0.5 tanh(0) = 0 and their h = 0.5 tanh(0) = 0, and their zero rows of the recurrent kernel add
    nothing to the H real units. `input_padding` zero rows of the kernel take such units of the layer
    below.

    Returns:
      (kernel, recurrent_kernel, bias) with H + padding units, gates i, f, c, o as before.
    """
    units = recurrent_kernel.shape[0]

    def widen_gates(weights: tf.Tensor) -> tf.Tensor:  # [..., 4H] -> [..., 4(H + padding)]
        gates = tf.pad(tf.reshape(weights, [-1, 4, units]), [[0, 0], [0, 0], [0, padding]])
        return tf.reshape(gates, [-1, 4 * (units + padding)])

    kernel = tf.pad(widen_gates(kernel), [[0, input_padding], [0, 0]])
    recurrent_kernel = tf.pad(widen_gates(recurrent_kernel), [[0, padding], [0, 0]])
    return kernel, recurrent_kernel, tf.reshape(widen_gates(bias), [-1])


def _on_padded_units(
    forward: Callable[..., tuple[tf.Tensor, tf.Tensor]], inputs: tf.Tensor, *state_and_weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """forward(inputs, h0, c0, kernel, recurrent_kernel, bias) on units padded to the kernels' multiple;
    (h, c) of the real units."""
    h0, c0, *weights = state_and_weights
    units = weights[1].shape[0]
    padding = -units % KERNEL_UNITS_MULTIPLE
    if not padding:
        return forward(inputs, *state_and_weights)
    h0, c0 = (tf.pad(state, [[0, 0], [0, padding]]) for state in (h0, c0))
    h, c = forward(inputs, h0, c0, *pad_units(padding, *weights))
    return h[..., :units], c[..., :units]


@keras.saving.register_keras_serializable(package="tf_charrnn")
class FusedLSTM(keras.layers.LSTM):
    """keras.layers.LSTM with the fused CPU kernels where they apply (see the module docstring).

    Args:
      use_kernels: run on the fused kernels where they apply; the runtime decides (False on a GPU, under
        XLA or a TPU, which cannot run them).
      **kwargs: keras.layers.LSTM's.
    """

    num_states = 2  # h and c

    def __init__(self, units: int, use_kernels: bool = False, **kwargs: Any) -> None:
        super().__init__(units, **kwargs)
        self.use_kernels = use_kernels

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "use_kernels": self.use_kernels}

    def _kernels(self, mask: tf.Tensor | None) -> ModuleType | None:
        """The kernel module where it applies to this call, else None."""
        cell = self.cell
        applies = (
            self.use_kernels
            and mask is None
            and not self.go_backwards
            and not cell.dropout
            and not cell.recurrent_dropout
            and cell.use_bias
            and self.compute_dtype in KERNEL_COMPUTE_DTYPES
            and cell.activation is keras.activations.tanh
            and cell.recurrent_activation is keras.activations.sigmoid
            and self._units_pay_on_the_kernels()
        )
        return native.load() if applies else None

    def _units_pay_on_the_kernels(self) -> bool:
        """Whether this layer's units run faster on the kernels than on Keras' ops: a multiple of 64, or
        padded to one where that measured faster (docs/performance.md, "Units that are not a multiple of
        64")."""
        if self.units % KERNEL_UNITS_MULTIPLE == 0 or self.units > PADDED_FLOAT32_MIN_UNITS:
            return True
        return self.compute_dtype == "bfloat16" and native.bfloat16_kernels()

    def implementation(self, mask: tf.Tensor | None = None) -> str:
        """What runs the time loop of a call with `mask`: FUSED_FLOAT32, FUSED_BFLOAT16 (the bfloat16
        kernels; a bfloat16 layer on a CPU without them runs on the float32 ones) or KERAS_OPS."""
        if self._kernels(mask) is None:
            return KERAS_OPS
        if self.compute_dtype == "bfloat16" and native.bfloat16_kernels():
            return FUSED_BFLOAT16
        return FUSED_FLOAT32

    def inner_loop(
        self,
        sequences: tf.Tensor,
        initial_state: list[tf.Tensor],
        mask: tf.Tensor | None,
        training: bool = False,
    ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        first_mask = keras.tree.flatten(mask)[0] if keras.tree.is_nested(mask) else mask
        implementation = self.implementation(first_mask)
        if implementation == KERAS_OPS:
            return super().inner_loop(sequences, initial_state, mask, training=training)
        kernels = native.load()
        assert kernels is not None  # the implementation is the kernels': they loaded
        cell = self.cell
        if self.compute_dtype == "float32":
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
        # bfloat16: the float32 variables as they are (the kernels round what feeds a product), the
        # state in float32; Keras casts the outputs and states back to bfloat16.
        with AutocastScope(None):
            weights = [cell.kernel.value, cell.recurrent_kernel.value, cell.bias.value]
        h0, c0 = (tf.cast(state, tf.float32) for state in initial_state)
        if implementation == FUSED_BFLOAT16:
            h, c = lstm_sequence_bfloat16(kernels, sequences, h0, c0, *weights)
        else:
            h, c = lstm_sequence(kernels, tf.cast(sequences, tf.float32), h0, c0, *weights)
            h = tf.cast(h, self.compute_dtype)
        return h[:, -1], h, [h[:, -1], c[:, -1]]

    def step_weights(self) -> dict[str, tf.Tensor]:
        """The weights `step` reads, as tensors to read once before a loop of steps: a variable read
        inside a while loop happens at every step, and at batch 1 those reads cost as much as the
        matmuls."""
        cell = self.cell
        return {
            "kernel": tf.convert_to_tensor(cell.kernel),
            "recurrent_kernel": tf.convert_to_tensor(cell.recurrent_kernel),
            "bias": tf.convert_to_tensor(cell.bias),
        }

    def step_implementation(self, precision: str = "float32") -> str:
        """What runs this layer's step in a model step with weights in `precision` ("float32", "bfloat16"
        or "int8"): FUSED_FLOAT32, FUSED_BFLOAT16 or FUSED_INT8 (the step kernel, its weights in that
        precision; bfloat16 where the library has the bfloat16 ops and TF_CHARRNN_BF16_KERNELS is not 0,
        int8 where it has the int8 step (AVX512-VNNI), else float32) or KERAS_OPS (`step`, float32)."""
        if self._step_kernel_missing() is not None:
            return KERAS_OPS
        if precision == "int8" and native.int8_ops():
            return FUSED_INT8
        return FUSED_BFLOAT16 if precision == "bfloat16" and native.bfloat16_ops() else FUSED_FLOAT32

    def step_kernel_missing(self, precision: str) -> str | None:
        """What the step kernel needs to read this layer's weights in `precision` ("float32", "bfloat16" or
        "int8") and lacks here, as the end of "... step weights need ..." in a log line; None where it has
        it."""
        missing = self._step_kernel_missing()
        if missing is not None:
            return missing
        if precision == "int8" and not native.int8_ops():
            return "the fused kernels' int8 ops (a CPU with AVX512-VNNI)"
        if precision == "bfloat16" and not native.bfloat16_ops():
            return "the fused kernels' bfloat16 ops (a CPU with AVX512-BF16; TF_CHARRNN_BF16_KERNELS not 0)"
        return None

    def _step_kernel_missing(self) -> str | None:
        """What the step kernel needs and lacks here, in any precision; None where it runs."""
        if not self.use_kernels:
            return "the fused kernels, off for this model (on a GPU, under XLA, or TF_CHARRNN_NATIVE=0)"
        if self.units % STEP_KERNEL_UNITS_MULTIPLE and self.units > PADDED_STEP_MAX_UNITS:
            return (
                f"the step kernel, which takes units that are a multiple of {STEP_KERNEL_UNITS_MULTIPLE} or "
                f"at most {PADDED_STEP_MAX_UNITS} (this model has {self.units})"
            )
        if native.load() is None:
            return "the fused kernels, which did not load here (the log above says why)"
        return None

    def packed_step_weights(self, precision: str = "float32", input_padding: int = 0) -> dict[str, tf.Tensor]:
        """[W; U] as the step kernel reads it, in the precision `step_implementation(precision)` names, and
        the bias: {"packed": weights, "bias": bias}, for int8 also {"scale": the scale of each column}.
        Units that are not a multiple of 16 are padded to one (`step_padding`, `pad_units`); the kernel
        gets `input_padding` zero rows for the padded units of the layer below."""
        cell = self.cell
        kernel, recurrent_kernel, bias = (
            tf.convert_to_tensor(weight) for weight in (cell.kernel, cell.recurrent_kernel, cell.bias)
        )
        if self.step_padding():
            kernel, recurrent_kernel, bias = pad_units(
                self.step_padding(), kernel, recurrent_kernel, bias, input_padding
            )
        implementation = self.step_implementation(precision)
        if implementation == FUSED_INT8:
            packed, scale = pack_step_weights_int8(kernel, recurrent_kernel)
            return {"packed": packed, "scale": scale, "bias": bias}
        if implementation == FUSED_BFLOAT16:
            return {"packed": pack_step_weights_bfloat16(kernel, recurrent_kernel), "bias": bias}
        return {"packed": pack_step_weights(kernel, recurrent_kernel), "bias": bias}

    def step_padding(self) -> int:
        """The units the step kernel adds to this layer's (they stay zero): up to a multiple of 16."""
        return -self.units % STEP_KERNEL_UNITS_MULTIPLE

    def step(
        self, inputs: tf.Tensor, states: tf.Tensor, weights: dict[str, tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One step with explicit state on TensorFlow ops (a model whose layers all step on the kernel
        runs them in one CharRnnModelStep call instead, `CharRNN.step`).

        Args:
          inputs: float32 [B, I].
          states: float32 [2, B, H], h and c.
          weights: `step_weights()`.

        Returns:
          (h float32 [B, H], new states float32 [2, B, H]).
        """
        h, c = lstm_cell_step(inputs, states[0], states[1], **weights)
        return h, tf.stack([h, c])


def lstm_cell_step(
    inputs: tf.Tensor,
    h: tf.Tensor,
    c: tf.Tensor,
    kernel: tf.Tensor,
    recurrent_kernel: tf.Tensor,
    bias: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Keras LSTMCell's arithmetic, in the same order, on weight tensors (without the cell's per-call
    bookkeeping: a batch-1 step is mostly per-op overhead). Returns (h, c), float32 [B, H] each."""
    z = tf.matmul(inputs, kernel) + tf.matmul(h, recurrent_kernel) + bias
    input_gate, forget_gate, candidate, output_gate = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(forget_gate) * c + tf.sigmoid(input_gate) * tf.tanh(candidate)
    return tf.sigmoid(output_gate) * tf.tanh(c), c


def pack_step_weights(kernel: tf.Tensor, recurrent_kernel: tf.Tensor) -> tf.Tensor:
    """[W; U] of an LSTMCell as CharRnnModelStep reads it in float32: [H / 16, I + H, 4 * 16], for each
    block of 16 units the 4 gates' 16 columns side by side."""
    stacked = tf.concat([tf.convert_to_tensor(kernel), tf.convert_to_tensor(recurrent_kernel)], 0)
    blocks = stacked.shape[1] // (4 * STEP_KERNEL_UNITS_MULTIPLE)
    packed = tf.transpose(tf.reshape(stacked, [-1, 4, blocks, STEP_KERNEL_UNITS_MULTIPLE]), [2, 0, 1, 3])
    return tf.reshape(packed, [blocks, -1, 4 * STEP_KERNEL_UNITS_MULTIPLE])


def pack_step_weights_bfloat16(kernel: tf.Tensor, recurrent_kernel: tf.Tensor) -> tf.Tensor:
    """[W; U] as CharRnnModelStep reads it in bfloat16: [H / 16, (I + H + 1) / 2, 4 * 16, 2], the
    float32 layout's rows k and k + 1 side by side in pairs (a zero row pads an odd I + H), rounded to
    nearest even."""
    packed = pack_step_weights(kernel, recurrent_kernel)
    depth = packed.shape[1]
    packed = tf.pad(packed, [[0, 0], [0, depth % 2], [0, 0]])
    pairs = tf.transpose(tf.reshape(packed, [packed.shape[0], -1, 2, packed.shape[2]]), [0, 1, 3, 2])
    return tf.cast(pairs, tf.bfloat16)


def pack_step_weights_int8(kernel: tf.Tensor, recurrent_kernel: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """[W; U] as CharRnnModelStepInt8 reads it: uint8 [H / 16, (I + 3) / 4 + H / 4, 4 * 16, 4], the
    float32 layout's rows in quads (W's rows zero-padded to a multiple of 4), each weight stored as its
    int8 value + 128; and float32 [4H], each column's scale (its largest |weight| / 127: symmetric, per
    output channel, as LiteRT's dynamic-range quantisation). A weight is its int8 value times its scale."""
    kernel, recurrent_kernel = tf.convert_to_tensor(kernel), tf.convert_to_tensor(recurrent_kernel)
    largest = tf.reduce_max(tf.abs(tf.concat([kernel, recurrent_kernel], 0)), axis=0)
    scale = tf.where(largest > 0, largest / 127.0, 1.0)
    kernel = tf.pad(kernel / scale, [[0, -kernel.shape[0] % 4], [0, 0]])
    packed = tf.clip_by_value(tf.round(pack_step_weights(kernel, recurrent_kernel / scale)), -127.0, 127.0)
    quads = tf.transpose(tf.reshape(packed, [packed.shape[0], -1, 4, packed.shape[2]]), [0, 1, 3, 2])
    return tf.cast(quads + 128.0, tf.uint8), scale
