"""The fused C++ LSTM kernels: they build here, match keras.layers.LSTM, and the layer falls back cleanly."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn import fused_lstm, native
from tf_charrnn import model as model_lib
from tf_charrnn.config import ModelConfig

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")


def test_kernels_build_wherever_there_is_a_compiler():
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler on this machine")
    assert native.load() is not None
    assert os.path.isfile(native.library_path())


def _layers(units, batch_size, seed=0):
    """A FusedLSTM and a keras.layers.LSTM, both stateful, with the same random weights."""
    layers = [
        cls(units, return_sequences=True, return_state=True, stateful=True)
        for cls in (fused_lstm.FusedLSTM, keras.layers.LSTM)
    ]
    for layer in layers:
        layer.build((batch_size, None, 5))
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layers[1].get_weights()]
    for layer in layers:
        layer.set_weights(weights)
    return layers


@needs_kernels
@pytest.mark.parametrize("batch_size, time, units", [(7, 5, 64), (3, 1, 128), (13, 24, 64)])
def test_fused_layer_matches_keras_lstm_in_outputs_states_and_gradients(batch_size, time, units):
    fused, reference = _layers(units, batch_size)
    assert fused._kernels(None) is not None
    rng = np.random.default_rng(1)
    upstream = tf.constant(rng.normal(size=(batch_size, time, units)), tf.float32)
    upstream_c = tf.constant(rng.normal(size=(batch_size, units)), tf.float32)

    @tf.function
    def run(layer, inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs, h, c = layer(inputs)
            # Every output carries gradient: the sequence, and the final cell state.
            loss = tf.reduce_sum(outputs * upstream) + tf.reduce_sum(c * upstream_c)
        return outputs, h, c, tape.gradient(loss, [inputs, *layer.trainable_variables])

    for call in range(2):  # the second call starts from the state the first left in the layer
        inputs = tf.constant(rng.normal(size=(batch_size, time, 5)), tf.float32)
        got, want = run(fused, inputs), run(reference, inputs)
        for name, g, w in zip(["outputs", "h", "c"], got[:3], want[:3], strict=True):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-5, err_msg=f"call {call}: {name}")
        for name, g, w in zip(["inputs", "kernel", "recurrent_kernel", "bias"], got[3], want[3], strict=True):
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(
                g / scale, w / scale, rtol=0, atol=1e-5, err_msg=f"call {call}: d{name}"
            )
    for g, w in zip(fused.states, reference.states, strict=True):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=1e-5)


@needs_kernels
def test_model_on_kernels_matches_the_keras_model_and_shares_its_weights():
    config = ModelConfig(vocab_size=11, embedding_dim=6, rnn_units=64, num_layers=2, dropout=0.0)
    fused = model_lib.build_model(config, batch_size=4, seed=1)
    plain = model_lib.build_model(config, batch_size=4, seed=1, fused_kernels=False)
    assert [v.path for v in fused.weights] == [v.path for v in plain.weights]
    model_lib.copy_weights(fused, plain)
    ids = tf.constant(np.random.default_rng(0).integers(0, 11, (4, 20)), tf.int32)

    @tf.function
    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(ids)
            loss = tf.reduce_mean(logits**2)
        return logits, tape.gradient(loss, model.trainable_variables)

    for _ in range(2):
        got_logits, got_grads = logits_and_gradients(fused)
        want_logits, want_grads = logits_and_gradients(plain)
        np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-5)
        for got, want in zip(got_grads, want_grads, strict=True):
            np.testing.assert_allclose(
                tf.convert_to_tensor(got), tf.convert_to_tensor(want), rtol=0, atol=1e-5
            )


@needs_kernels
def test_kernels_are_used_only_where_they_apply():
    def kernels_for(units=64, **kwargs):
        layer = fused_lstm.FusedLSTM(units, return_sequences=True, **kwargs)
        layer.build((2, None, 3))
        return layer._kernels(None)

    assert kernels_for() is not None
    assert kernels_for(units=48) is None  # not a multiple of 64
    assert kernels_for(use_kernels=False) is None
    assert kernels_for(dtype="mixed_bfloat16") is None
    assert kernels_for(recurrent_dropout=0.1) is None
    assert kernels_for(activation="relu") is None


def test_layer_without_kernels_is_keras_lstm(monkeypatch):
    monkeypatch.setattr(native, "load", lambda: None)
    fused, reference = _layers(64, batch_size=3)
    inputs = tf.constant(np.random.default_rng(2).normal(size=(3, 4, 5)), tf.float32)
    for got, want in zip(fused(inputs), reference(inputs), strict=True):
        np.testing.assert_array_equal(got, want)


def test_failed_build_raises_a_clear_error_and_leaves_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "false")
    with pytest.raises(native.NativeBuildError, match="compiling the fused kernels failed"):
        native.build_and_load(cache=str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.NativeBuildError, match="no C\\+\\+ compiler"):
        native.build_and_load(cache=str(tmp_path))
    assert os.listdir(tmp_path / "native") == []


@needs_kernels
@pytest.mark.parametrize(
    "xw_shape, h0_shape, kernel_shape, message",
    [
        ((2, 3, 192), (2, 48), (48, 192), "multiple of 64"),
        ((2, 3, 256), (2, 64), (64, 128), r"recurrent_kernel must be \[units, 4 \* units\]"),
        ((2, 3, 256), (3, 64), (64, 256), "h0 must be"),
        ((2, 0, 256), (2, 64), (64, 256), "time > 0"),
    ],
)
def test_kernel_rejects_inconsistent_shapes(xw_shape, h0_shape, kernel_shape, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        native.load().char_rnn_lstm_sequence(
            tf.zeros(xw_shape),
            tf.zeros(h0_shape),
            tf.zeros(h0_shape),
            tf.zeros(kernel_shape),
            tf.zeros([256]),
        )
