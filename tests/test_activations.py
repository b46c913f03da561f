"""inference/activations.py: every state and gate after each character equals Keras' own cell stepped on
the same weights, for every cell, in one stream or several, whatever implementation the model runs."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import ModelConfig
from tf_charrnn.inference import activations
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.model.fused_lstm import FUSED_FLOAT32

VOCAB, EMBEDDING = 12, 8


def _model(cell, units, num_layers=2, **kwargs):
    config = dataclasses.replace(
        ModelConfig(),
        vocab_size=VOCAB,
        embedding_dim=EMBEDDING,
        rnn_units=units,
        num_layers=num_layers,
        cell=cell,
        dropout=0.0,
    )
    model = CharRNN(config, batch_size=1, **kwargs)
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _keras_cell(cell, units, layer):
    keras_cell = {
        "lstm": keras.layers.LSTMCell,
        "gru": keras.layers.GRUCell,
        "rnn": keras.layers.SimpleRNNCell,
    }[cell](units)
    keras_cell.build((None, layer.cell.kernel.shape[0]))
    keras_cell.set_weights([w.numpy() for w in layer.cell.weights])
    return keras_cell


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _reference(model, ids, streams):
    """{"LAYER/KIND": [N, H]} from Keras' cells stepped one character at a time over each stream (h, c),
    and the gates computed in float64 from the states Keras' cell carried."""
    cell_name, units = model.config.cell, model.config.rnn_units
    length = -(-len(ids) // streams)
    pieces = [ids[start : start + length] for start in range(0, len(ids), length)]
    result = {}
    inputs = [model.embedding.embeddings.numpy()[piece] for piece in pieces]
    for layer in model.recurrent_layers:
        cell = _keras_cell(cell_name, units, layer)
        kernel, recurrent, bias = (w.numpy().astype(np.float64) for w in layer.cell.weights)
        rows = {kind: [] for kind in activations.KINDS[cell_name]}
        outputs = []
        for x in inputs:
            state = [np.zeros([1, units], np.float32)] * (2 if cell_name == "lstm" else 1)
            hs = []
            for t in range(len(x)):
                previous_h = state[0][0].astype(np.float64)
                h, state = cell(x[t : t + 1], state)
                state = [np.asarray(s) for s in tf.nest.flatten(state)]
                hs.append(np.asarray(h)[0])
                rows["h"].append(np.asarray(h)[0])
                if cell_name == "lstm":
                    rows["c"].append(state[1][0])
                    z = x[t].astype(np.float64) @ kernel + previous_h @ recurrent + bias
                    i, f, g, o = np.split(z, 4)
                    for kind, value in zip(
                        ["input", "forget", "candidate", "output"],
                        [_sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)],
                        strict=True,
                    ):
                        rows[kind].append(value)
                elif cell_name == "gru":
                    x_z, x_r, x_h = np.split(x[t].astype(np.float64) @ kernel + bias[0], 3)
                    h_z, h_r, h_h = np.split(previous_h @ recurrent + bias[1], 3)
                    reset = _sigmoid(x_r + h_r)
                    rows["update"].append(_sigmoid(x_z + h_z))
                    rows["reset"].append(reset)
                    rows["candidate"].append(np.tanh(x_h + reset * h_h))
            outputs.append(np.stack(hs))
        inputs = outputs
        for kind, values in rows.items():
            result[f"{layer.name}/{kind}"] = np.stack(values)
    return result


@pytest.mark.parametrize("cell, units", [("lstm", 8), ("lstm", 64), ("gru", 8), ("rnn", 8)])
@pytest.mark.parametrize("streams", [1, 3])
def test_states_and_gates_equal_keras_cells(cell, units, streams):
    model = _model(cell, units)
    ids = np.random.default_rng(5).integers(0, VOCAB, 29)
    got = activations.compute_activations(model, ids, "x" * 29, streams=streams)
    want = _reference(model, ids, streams)
    assert (
        set(got.arrays)
        == set(want)
        == {f"{cell}_{layer}/{kind}" for layer in (1, 2) for kind in activations.KINDS[cell]}
    )
    for name, value in want.items():
        assert got[name].shape == (29, units) and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], value, atol=2e-5, err_msg=name)
    assert got.streams == streams and got.layers == (f"{cell}_1", f"{cell}_2") and got.units == units
    if cell == "lstm":  # the state's identities hold on the recorded gates
        c_previous = np.concatenate([np.zeros([1, units]), got["lstm_1/c"][:-1]])
        c_previous[:: -(-29 // streams)] = 0  # each stream starts from a zero state
        np.testing.assert_allclose(
            got["lstm_1/c"],
            got["lstm_1/forget"] * c_previous + got["lstm_1/input"] * got["lstm_1/candidate"],
            atol=1e-5,
        )
        np.testing.assert_allclose(
            got["lstm_1/h"], got["lstm_1/output"] * np.tanh(got["lstm_1/c"]), atol=1e-5
        )


def test_every_implementation_gives_the_same_values():
    """Fused float32 kernels, bfloat16 policy, Keras ops: the values come from the float32 weights."""
    keras_model = _model("lstm", 64)
    fused = _model("lstm", 64, fused_kernels=True)
    bfloat16 = _model("lstm", 64, fused_kernels=True, dtype_policy="mixed_bfloat16")
    assert fused.recurrent_layers[0].implementation() == FUSED_FLOAT32
    ids = np.random.default_rng(1).integers(0, VOCAB, 700)  # more than one window
    want = activations.compute_activations(keras_model, ids, "", streams=1)
    for model in (fused, bfloat16):
        got = activations.compute_activations(model, ids, "", streams=1)
        for name in want.arrays:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_the_last_layers_h_gives_the_models_logits():
    model = _model("lstm", 8)
    ids = np.random.default_rng(2).integers(0, VOCAB, 40)
    got = activations.compute_activations(model, ids, "", streams=1)
    logits = got["lstm_2/h"] @ model.head.kernel.numpy() + model.head.bias.numpy()
    model.reset_state()
    want = model(tf.constant(ids[None, :], tf.int32), training=False).numpy()[0]
    np.testing.assert_allclose(logits, want, atol=1e-4)


def test_windows_carry_the_state():
    model = _model("gru", 8, num_layers=1)
    ids = np.random.default_rng(4).integers(0, VOCAB, 1100)
    one = activations.compute_activations(model, ids, "", streams=1)
    keras_h = _reference(model, ids[:600], 1)["gru_1/h"]
    np.testing.assert_allclose(one["gru_1/h"][:600], keras_h, atol=2e-5)
