"""The fused dropout kernel: bit for bit what Keras' Dropout (tf.nn.experimental.stateless_dropout) gives from
the same seed, forward and backward, and the model's dropout layers on it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import ModelConfig
from tf_charrnn.model import dropout, native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.model.dropout import FusedDropout

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")


def _bits(tensor):
    """The tensor's bit patterns, so that equality is exact (signed zeros included)."""
    return tf.bitcast(tensor, tf.uint16 if tensor.dtype == tf.bfloat16 else tf.uint32).numpy()


def _forward_and_gradient(function, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


@needs_kernels
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
@pytest.mark.parametrize(
    "shape", [[1], [3, 7, 5], [2, 33], [50, 50, 128]], ids=["1", "odd", "tail", "two-shards"]
)
@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_the_kernel_is_stateless_dropout_bit_for_bit(dtype, shape, rate):
    x = tf.cast(tf.random.stateless_normal(shape, seed=[3, 4]), dtype)
    upstream = tf.cast(tf.random.stateless_normal(shape, seed=[5, 6]), dtype)
    kernels = native.load()
    for seed in ([1, 2], [123456789, -5]):
        seed = tf.constant(seed, tf.int32)
        expected = _forward_and_gradient(
            lambda t, s=seed: tf.nn.experimental.stateless_dropout(t, rate, seed=s), x, upstream
        )
        fused = _forward_and_gradient(lambda t, s=seed: dropout.dropout(kernels, t, rate, s), x, upstream)
        for ours, theirs in zip(fused, expected, strict=True):
            np.testing.assert_array_equal(_bits(ours), _bits(theirs))
        kept = _bits(fused[0]) != 0
        assert 0.5 * (1 - rate) < kept.mean() < 1.5 * (1 - rate) or x.shape.num_elements() < 100


@needs_kernels
@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_counters_whose_low_word_wraps_carry_as_philox_does(dtype):
    """A stream whose 32-bit low counter word wraps inside a block of 16 counters: the kernel's counters
    carry into the next word as StatelessRandomUniformV2's do."""
    key = tf.constant([0x1234_5678_9ABC], tf.uint64)
    counter = tf.constant([2**32 - 7, 2**40 + 3], tf.uint64)
    shape = [37, 29]
    x = tf.cast(tf.random.stateless_normal(shape, seed=[7, 8]), dtype)
    uniform = tf.raw_ops.StatelessRandomUniformV2(shape=shape, key=key, counter=counter, alg=1, dtype=dtype)
    rate, scale = tf.constant(0.3, dtype), tf.constant(1 / 0.7, dtype)
    expected = tf.where(uniform >= rate, x * scale, tf.zeros_like(x))
    y, keep = native.load().char_rnn_dropout(x, key, counter, rate, scale)
    np.testing.assert_array_equal(_bits(y), _bits(expected))
    np.testing.assert_array_equal(keep.numpy(), (uniform >= rate).numpy())


@needs_kernels
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_the_layer_draws_and_drops_as_keras_dropout(policy):
    layers = [
        FusedDropout(0.25, use_kernels=True, seed=11, dtype=policy),
        keras.layers.Dropout(0.25, seed=11, dtype=policy),
    ]
    x = tf.cast(tf.random.stateless_normal([4, 9, 64], seed=[1, 1]), layers[0].compute_dtype)
    assert layers[0].kernels(x) is not None
    for _ in range(3):  # the seed generators advance alike
        ours, theirs = (layer(x, training=True) for layer in layers)
        np.testing.assert_array_equal(_bits(ours), _bits(theirs))
    assert layers[0](x, training=False) is x


@needs_kernels
def test_the_kernel_applies_only_where_it_can():
    x = tf.zeros([2, 3, 4])
    assert FusedDropout(0.2, use_kernels=False).kernels(x) is None
    assert FusedDropout(0.2, use_kernels=True, noise_shape=(2, 1, 4)).kernels(x) is None
    assert FusedDropout(0.0, use_kernels=True).kernels(x) is None
    assert FusedDropout(0.2, use_kernels=True).kernels(tf.zeros([2], tf.float16)) is None
    assert FusedDropout(0.2, use_kernels=True).kernels(x) is not None


@needs_kernels
@pytest.mark.parametrize("embedding_dropout", [0.0, 0.2])
def test_a_model_trains_to_the_same_weights_with_either_dropout(embedding_dropout):
    config = ModelConfig(
        vocab_size=11,
        embedding_dim=8,
        rnn_units=64,
        num_layers=2,
        dropout=0.3,
        embedding_dropout=embedding_dropout,
    )
    ids = tf.random.stateless_uniform([3, 12], seed=[2, 3], maxval=11, dtype=tf.int32)
    results = []
    for fused in (True, False):
        keras.utils.set_random_seed(5)
        model = CharRNN(config, batch_size=3, seed=9, fused_kernels=True)
        dropout_layers = [layer for layer in model.layers if isinstance(layer, FusedDropout)]
        assert len(dropout_layers) == (3 if embedding_dropout else 2)
        for layer in dropout_layers:
            layer.use_kernels = fused
            assert (layer.kernels(tf.zeros([1])) is not None) == fused
        optimizer = keras.optimizers.Adam(0.01)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(
                        ids, model(ids, training=True), from_logits=True
                    )
                )
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        results.append([w.numpy() for w in model.trainable_variables])
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_array_equal(ours, theirs)
