"""What a run's recurrent layers hold after each character of a text: hidden state, cell state (LSTM) and
gate values, recomputed in float32 from the layers' weights, in streams as training reads its text.

Shapes: N characters, B streams, W window, E input features, H rnn_units, G gates x H.
"""

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from tf_charrnn.model import native
from tf_charrnn.model.fused_lstm import KERNEL_UNITS_MULTIPLE

# The arrays of each --cell, in order: the state after the character, then its gates (sigmoid gates,
# then the tanh candidate). Keras' gate order inside the weights: LSTM i, f, c~, o; GRU z, r, h~.
KINDS = {
    "lstm": ("h", "c", "input", "forget", "output", "candidate"),
    "gru": ("h", "update", "reset", "candidate"),
    "rnn": ("h",),
}
# The gates in [0, 1] (sigmoids) whose saturation the paper plots.
SIGMOID_GATES = {"lstm": ("input", "forget", "output"), "gru": ("update", "reset"), "rnn": ()}
# The states a cell's activation is read from in the inspection (LSTM: h and c; GRU, RNN: h).
WINDOW = 512  # characters per stream per pass: bounds the [B, W, G] temporaries, the state carries over


@dataclasses.dataclass(frozen=True)
class Activations:
    """The activations behind each character of `text`.

    Attributes:
      text: the characters, in order (those outside the vocabulary left out, with skip_unknown).
      cell: the run's --cell ("lstm", "gru" or "rnn").
      layers: the recurrent layers' names, first to last ("lstm_1", "lstm_2").
      arrays: {"LAYER/KIND": float32 [N, H]}: row t is the value after reading text[t]; KIND is one of
        KINDS[cell] ("h", "c", "input", "forget", "output", "candidate" for an LSTM).
      streams: the number of contiguous streams the text was cut into (each starts from a zero state).
    """

    text: str
    cell: str
    layers: tuple[str, ...]
    arrays: dict[str, np.ndarray]
    streams: int

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS[self.cell]

    @property
    def units(self) -> int:
        return self.arrays[f"{self.layers[0]}/h"].shape[1]


def compute_activations(model: Any, ids: Any, text: str, streams: int = 1) -> Activations:
    """Runs `ids` through `model`'s recurrent layers and records every state and gate.

    The text is cut into `streams` contiguous streams of ceil(N / streams) characters (the last one
    shorter), each started from a zero state and carried through windows of WINDOW characters, as
    training cuts its text; `streams=1` is one pass from a zero state. The arithmetic is Keras' cells' in
    float32 on the float32 weights, whatever runs the model's own time loop (fused float32 or bfloat16
    kernels, Keras ops), so every implementation of a run gives the same values. LSTM layers run on the
    float32 fused kernel where it is built (it returns the activated gates), else on TensorFlow ops.

    Args:
      model: a CharRNN (any batch size; only its weights are read).
      ids: int [N] character ids of `text`.
      text: the characters of `ids` (kept in the result).
      streams: B, at least 1 (fewer when the text has fewer characters).

    Returns:
      Activations.
    """
    ids = np.asarray(ids, np.int32)
    count = len(ids)
    cell = model.config.cell
    streams = max(1, min(streams, count))
    length = math.ceil(count / streams) if count else 0
    # The padding lies at the end of the last stream, after every real character: it changes nothing.
    flat = np.zeros(streams * length, np.int32)
    flat[:count] = ids
    padded = flat.reshape(streams, length)
    embedding = model.embedding.embeddings.numpy().astype(np.float32)
    runners = [_layer_runner(cell, layer) for layer in model.recurrent_layers]
    units = model.config.rnn_units
    outputs = {
        (index, kind): np.zeros([streams, length, units], np.float32)
        for index in range(len(runners))
        for kind in KINDS[cell]
    }
    states = [runner.zero_state(streams) for runner in runners]
    for start in range(0, length, WINDOW):
        x = tf.constant(embedding[padded[:, start : start + WINDOW]])
        for index, runner in enumerate(runners):
            values, states[index] = runner(x, states[index])
            for kind, value in zip(KINDS[cell], values, strict=True):
                outputs[index, kind][:, start : start + WINDOW] = value.numpy()
            x = values[0]
    names = tuple(layer.name for layer in model.recurrent_layers)
    arrays = {
        f"{names[index]}/{kind}": value.reshape(streams * length, units)[:count]
        for (index, kind), value in outputs.items()
    }
    return Activations(text=text, cell=cell, layers=names, arrays=arrays, streams=streams)


def _weights(layer: Any) -> list[Any]:
    cell = layer.cell
    return [tf.constant(variable.numpy().astype(np.float32)) for variable in cell.weights]


class _LayerRunner:
    """One recurrent layer over a window: (x float32 [B, W, E], state) -> ([value [B, W, H] per kind],
    state)."""

    num_values = 1  # the arrays of KINDS[cell]

    def __init__(self, layer: Any) -> None:
        self.units = layer.units
        self.kernel, self.recurrent_kernel, self.bias = _weights(layer)
        self._scan = tf.function(self._scan_python, reduce_retracing=True, autograph=False)

    def zero_state(self, streams: int) -> Any:
        return tf.zeros([streams, self.units])

    def __call__(self, x: Any, state: Any) -> tuple[list[Any], Any]:
        xw = _project(x, self.kernel)
        values = self._scan(tf.transpose(xw, [1, 0, 2]), state)
        values = [tf.transpose(value, [1, 0, 2]) for value in values]
        return values, values[0][:, -1]

    def _scan_python(self, xw_time_major: Any, state: Any) -> Any:
        def step(carried: Any, xw: Any) -> Any:
            return self.step(xw, carried[0])

        others = tuple(tf.zeros_like(state) for _ in range(self.num_values - 1))
        return tf.scan(step, xw_time_major, initializer=(state, *others))

    def step(self, xw: Any, h: Any) -> tuple[Any, ...]:
        raise NotImplementedError


class _RNNRunner(_LayerRunner):
    """keras.layers.SimpleRNN: h = tanh(x W + b + h U)."""

    def step(self, xw: Any, h: Any) -> tuple[Any, ...]:
        return (tf.tanh(xw + self.bias + tf.matmul(h, self.recurrent_kernel)),)


class _GRURunner(_LayerRunner):
    """keras.layers.GRU with reset_after (Keras' default): the recurrent bias is applied before the
    reset gate, h = z h' + (1 - z) h~."""

    num_values = 4

    def __init__(self, layer: Any) -> None:
        if not layer.cell.reset_after:
            raise ValueError("only GRU layers with reset_after=True (Keras' default) are supported")
        super().__init__(layer)

    def step(self, xw: Any, h: Any) -> tuple[Any, ...]:
        input_bias, recurrent_bias = tf.unstack(self.bias)
        x_z, x_r, x_h = tf.split(xw + input_bias, 3, axis=-1)
        h_z, h_r, h_h = tf.split(tf.matmul(h, self.recurrent_kernel) + recurrent_bias, 3, axis=-1)
        update = tf.sigmoid(x_z + h_z)
        reset = tf.sigmoid(x_r + h_r)
        candidate = tf.tanh(x_h + reset * h_h)
        return update * h + (1 - update) * candidate, update, reset, candidate


class _LSTMRunner(_LayerRunner):
    """keras.layers.LSTM (Keras LSTMCell's arithmetic): z = x W + h U + b split into i, f, c~, o;
    c = f c' + i c~, h = o tanh(c). On the float32 fused kernel where it is built."""

    def __init__(self, layer: Any) -> None:
        super().__init__(layer)
        self._kernels = native.load() if self.units % KERNEL_UNITS_MULTIPLE == 0 else None

    def zero_state(self, streams: int) -> Any:
        return (tf.zeros([streams, self.units]), tf.zeros([streams, self.units]))

    def __call__(self, x: Any, state: Any) -> tuple[list[Any], Any]:
        h0, c0 = state
        xw = _project(x, self.kernel)
        if self._kernels is not None:
            h, c, gates = self._kernels.char_rnn_lstm_sequence(xw, h0, c0, self.recurrent_kernel, self.bias)
            input_gate, forget_gate, candidate, output_gate = tf.split(gates, 4, axis=-1)
        else:
            h, c, input_gate, forget_gate, output_gate, candidate = (
                tf.transpose(value, [1, 0, 2]) for value in self._scan(tf.transpose(xw, [1, 0, 2]), (h0, c0))
            )
        return [h, c, input_gate, forget_gate, output_gate, candidate], (h[:, -1], c[:, -1])

    def _scan_python(self, xw_time_major: Any, state: Any) -> Any:
        def step(carried: Any, xw: Any) -> Any:
            return self.step(xw, carried[0], carried[1])

        zeros = tf.zeros_like(state[0])
        initializer = (state[0], state[1], zeros, zeros, zeros, zeros)
        return tf.scan(step, xw_time_major, initializer=initializer)

    def step(self, xw: Any, h: Any, c: Any = None) -> tuple[Any, ...]:
        z = xw + tf.matmul(h, self.recurrent_kernel) + self.bias
        input_gate, forget_gate, candidate, output_gate = tf.split(z, 4, axis=-1)
        input_gate, forget_gate = tf.sigmoid(input_gate), tf.sigmoid(forget_gate)
        output_gate, candidate = tf.sigmoid(output_gate), tf.tanh(candidate)
        c = forget_gate * c + input_gate * candidate
        return output_gate * tf.tanh(c), c, input_gate, forget_gate, output_gate, candidate


def _project(x: Any, kernel: Any) -> Any:
    """x W as one large matmul: float32 [B, W, E] -> [B, W, G]."""
    shape = tf.shape(x)
    return tf.reshape(tf.matmul(tf.reshape(x, [-1, shape[2]]), kernel), [shape[0], shape[1], -1])


def _layer_runner(cell: str, layer: Any) -> _LayerRunner:
    return {"lstm": _LSTMRunner, "gru": _GRURunner, "rnn": _RNNRunner}[cell](layer)


def stream_count(num_ids: int, batch_size: int, seq_length: int) -> int:
    """The streams a text is cut into, as training cuts its text: the run's batch size, fewer where the
    text holds fewer than batch_size windows of seq_length (each stream at least one window), at least 1."""
    return max(1, min(batch_size, num_ids // max(1, seq_length)))
