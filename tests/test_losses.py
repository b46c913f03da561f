import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.model import losses, native
from tf_charrnn.runtime import placement
from tf_charrnn.training.train_step import TrainStep

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)


def test_sequence_loss_equals_hand_computation():
    logits = np.array(
        [[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]], [[2.0, -1.0, 0.0], [1.0, 1.0, 1.0]]], dtype=np.float32
    )
    targets = np.array([[1, 2], [0, 1]])
    log_probs = _log_softmax(logits)
    expected = -np.mean([log_probs[b, t, targets[b, t]] for b in range(2) for t in range(2)])
    assert float(losses.sequence_loss(targets, logits)) == pytest.approx(expected, rel=1e-6)


def test_weighted_sequence_loss():
    logits = np.array([[[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]]], dtype=np.float32)
    targets = np.array([[0, 0, 1]])
    weights = np.array([[1.0, 0.0, 3.0]])
    log_probs = _log_softmax(logits)
    expected = -(log_probs[0, 0, 0] * 1.0 + log_probs[0, 2, 1] * 3.0) / 4.0
    assert float(losses.sequence_loss(targets, logits, weights)) == pytest.approx(expected, rel=1e-6)


def test_bits_and_perplexity():
    assert losses.bits_per_char(math.log(2.0)) == pytest.approx(1.0)
    assert losses.bits_per_char(1.4) == pytest.approx(1.4 / math.log(2.0))
    assert losses.perplexity(math.log(65.0)) == pytest.approx(65.0)
    assert losses.perplexity(1e6) == math.inf


@needs_kernels
@pytest.mark.parametrize(
    "rows, classes, scale",
    [(2500, 65, 3.0), (7, 1, 1.0), (5, 16, 50.0), (33, 17, 1e3), (100, 100, 0.1), (4, 200, 10), (0, 5, 1)],
)
def test_the_fused_cross_entropy_is_tensorflow_s_to_rounding(rows, classes, scale):
    # Vocabularies below, at and across a vector's 16 classes, logits far apart and near; its sum of
    # exponentials may be summed in another order than TensorFlow's, so loss and backprop agree to rounding.
    rng = np.random.default_rng(classes)
    logits = tf.constant(rng.normal(size=(rows, classes)) * scale + rng.normal() * scale, tf.float32)
    labels = tf.constant(rng.integers(0, classes, rows), tf.int32)
    want_loss, want_backprop = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(features=logits, labels=labels)
    loss, backprop = native.load().char_rnn_softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(backprop, want_backprop, rtol=0, atol=1e-6)
    if rows:  # each row's backprop is a distribution minus its label's one
        np.testing.assert_allclose(np.sum(backprop, axis=1), 0.0, atol=1e-5)


@needs_kernels
@pytest.mark.parametrize("weighted", [False, True])
def test_the_fused_sequence_loss_and_its_gradient_are_tensorflow_s(weighted):
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(3, 5, 65)) * 2, tf.float32)
    targets = tf.constant(rng.integers(0, 65, (3, 5)), tf.int64)
    weights = tf.constant(rng.uniform(size=(3, 5)), tf.float32) if weighted else None
    results = []
    for use_kernels in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = losses.sequence_loss(targets, logits, weights, use_kernels=use_kernels)
        results.append((loss.numpy(), tape.gradient(loss, logits).numpy()))
    (fused, fused_gradient), (reference, reference_gradient) = results
    assert fused == pytest.approx(reference, rel=1e-6)
    np.testing.assert_allclose(fused_gradient, reference_gradient, rtol=0, atol=1e-7)


@needs_kernels
def test_a_label_outside_the_vocabulary_is_refused_as_tensorflow_refuses_it():
    outside = "label value of 3 which is outside the valid range"
    with pytest.raises(tf.errors.InvalidArgumentError, match=outside):
        losses.sequence_loss(tf.constant([[0, 3]]), tf.zeros([1, 2, 3]), use_kernels=True)


def test_the_fused_loss_without_the_kernels_is_tensorflow_s(monkeypatch):
    logits = np.array([[[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]]], dtype=np.float32)
    reference = float(losses.sequence_loss([[1, 2]], logits))
    monkeypatch.setattr(native, "load", lambda: None)
    assert float(losses.sequence_loss([[1, 2]], logits, use_kernels=True)) == reference


@needs_kernels
@pytest.mark.parametrize("fused_kernels", [True, False])
def test_the_training_step_takes_the_loss_from_the_kernel_where_the_kernels_run(fused_kernels):
    flat = dict(vocab_size=20, embedding_dim=8, rnn_units=64, num_layers=2, batch_size=4, seq_length=6)
    config = RunConfig.from_flat(flat)
    runtime = placement.resolve(config)
    if not fused_kernels:
        runtime = dataclasses.replace(runtime, fused_kernels=False, bfloat16_kernels=False)
    keras.utils.set_random_seed(5)
    step = TrainStep(config, runtime)
    batch = np.random.default_rng(3).integers(0, 20, size=(4, 7)).astype(np.int32)
    inputs, targets = tf.constant(batch[:, :-1]), tf.constant(batch[:, 1:])
    traced = step._train.get_concrete_function(inputs, targets, tf.constant([0.01, 0.0]), tf.ones([4]))
    graph = traced.graph.as_graph_def()  # the step's ops and those of the functions it calls
    ops = [node.op for node in graph.node]
    ops += [node.op for function in graph.library.function for node in function.node_def]
    assert ("CharRnnSoftmaxCrossEntropy" in ops) == fused_kernels
    assert ("SparseSoftmaxCrossEntropyWithLogits" in ops) != fused_kernels
