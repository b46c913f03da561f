"""Adam on the fused kernels (CharRnnAdam, CharRnnAdamSlices): bit for bit Keras' Adam, dense and
IndexedSlices gradients, both epsilon forms, and where it falls back to Keras' ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import OptimizationConfig, RunConfig
from tf_charrnn.model import native
from tf_charrnn.runtime import placement
from tf_charrnn.training.optimizer import Adam, BiasCorrectedEpsilonAdam, make_optimizer
from tf_charrnn.training.train_step import TrainStep

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")

# An embedding-sized variable (its gradient as IndexedSlices), matrices with a tail past 16 lanes, a vector,
# and one large enough for the dense op to split it across threads.
_SHAPES = [(65, 64), (33, 17), (128, 512), (5,), (300, 300)]


def _bits(values):
    return [np.asarray(value).view(np.uint32) for value in values]


def _gradients(rng, index_dtype):
    """Per step: the embedding's gradient as IndexedSlices with repeated rows, then dense gradients of
    scales from 1e-7 to 10 (where epsilon and the gradients meet, and where they do not)."""
    steps = []
    for _ in range(4):
        indices = rng.integers(0, _SHAPES[0][0], size=500)
        slices = tf.IndexedSlices(
            tf.constant(rng.normal(size=(500, _SHAPES[0][1])).astype(np.float32)),
            tf.constant(indices, index_dtype),
            tf.constant(_SHAPES[0], tf.int64),
        )
        dense = [
            tf.constant((rng.normal(size=shape) * 10.0 ** rng.integers(-7, 2)).astype(np.float32))
            for shape in _SHAPES[1:]
        ]
        steps.append([slices, *dense])
    return steps


def _train(optimizer, steps):
    rng = np.random.default_rng(7)
    variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in _SHAPES]
    optimizer.build(variables)

    @tf.function
    def apply(gradients):
        optimizer.apply(gradients, variables)

    for gradients in steps:
        apply(gradients)
    return [v.numpy() for v in variables] + [s.numpy() for s in optimizer._momentums + optimizer._velocities]


@needs_kernels
@pytest.mark.parametrize("index_dtype", [tf.int32, tf.int64])
@pytest.mark.parametrize(
    "config",
    [
        OptimizationConfig(learning_rate=0.01),
        OptimizationConfig(learning_rate=0.002, adam_beta2=0.99),
        OptimizationConfig(learning_rate=0.01, adam_epsilon=1e-8, adam_epsilon_form="pytorch"),
    ],
    ids=["keras", "beta2-0.99", "pytorch-epsilon"],
)
def test_the_fused_update_is_keras_adam_bit_for_bit(config, index_dtype):
    steps = _gradients(np.random.default_rng(1), index_dtype)
    fused = make_optimizer(config, kernels=native.load())
    want = _train(make_optimizer(config), steps)
    assert fused._kernels is not None
    for got, expected in zip(_bits(_train(fused, steps)), _bits(want), strict=True):
        np.testing.assert_array_equal(got, expected)
    if config.adam_epsilon_form == "keras":  # and Keras' own class, for the form it names
        keras_adam = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_2=config.adam_beta2)
        for got, expected in zip(_bits(_train(keras_adam, steps)), _bits(want), strict=True):
            np.testing.assert_array_equal(got, expected)


@needs_kernels
def test_the_fused_update_runs_two_ops_where_keras_runs_many():
    steps = _gradients(np.random.default_rng(1), tf.int32)

    def op_types(optimizer):
        variables = [keras.Variable(np.zeros(shape, np.float32)) for shape in _SHAPES]
        optimizer.build(variables)
        graph = tf.function(lambda gradients: optimizer.apply(gradients, variables)).get_concrete_function(
            steps[0]
        )
        return [op.type for op in graph.graph.get_operations()]

    fused = op_types(make_optimizer(OptimizationConfig(), kernels=native.load()))
    unfused = op_types(make_optimizer(OptimizationConfig()))
    assert fused.count("CharRnnAdam") == 1 and fused.count("CharRnnAdamSlices") == 1
    assert "CharRnnAdam" not in unfused and "UnsortedSegmentSum" in unfused
    assert len(fused) < len(unfused) / 2


@needs_kernels
def test_a_slice_outside_the_variable_is_refused():
    kernels = native.load()
    scalars = [tf.constant(value, tf.float32) for value in (0.01, 1e-7, 0.1, 0.001)]
    zeros = tf.zeros([3, 4])
    with pytest.raises(tf.errors.InvalidArgumentError, match="slice 1 names row 3 of a variable of 3 rows"):
        kernels.char_rnn_adam_slices(*scalars, tf.ones([2, 4]), tf.constant([0, 3]), zeros, zeros, zeros)


def _update_under(strategy, optimizer, gradients):
    """Builds `optimizer` on fresh variables in `strategy`'s scope and applies `gradients` once through
    strategy.run; returns (the op types of the traced step, the variables after it)."""
    with strategy.scope():
        rng = np.random.default_rng(7)
        variables = [keras.Variable(rng.normal(size=shape).astype(np.float32)) for shape in _SHAPES[1:]]
        optimizer = optimizer()
        optimizer.build(variables)
    step = tf.function(lambda: strategy.run(optimizer.apply, (gradients, variables)))
    ops = [op.type for op in step.get_concrete_function().graph.get_operations()]
    step()
    return ops, [v.numpy() for v in variables]


@needs_kernels
@pytest.mark.parametrize("reason", ["amsgrad", "strategy"])
def test_where_it_does_not_apply_the_update_is_keras_own(reason):
    """amsgrad and any tf.distribute strategy run Keras' ops (which handle them), with Keras' result."""
    gradients = _gradients(np.random.default_rng(2), tf.int32)[0][1:]
    strategy = tf.distribute.get_strategy()  # the default one: no strategy
    if reason == "strategy":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    amsgrad = reason == "amsgrad"
    ops, fused = _update_under(
        strategy, lambda: Adam(learning_rate=0.01, amsgrad=amsgrad, kernels=native.load()), gradients
    )
    _, reference = _update_under(
        strategy, lambda: keras.optimizers.Adam(learning_rate=0.01, amsgrad=amsgrad), gradients
    )
    assert "CharRnnAdam" not in ops and "AssignAddVariableOp" in ops
    for got, expected in zip(fused, reference, strict=True):
        np.testing.assert_array_equal(got, expected)


@needs_kernels
@pytest.mark.parametrize("mixed_precision", ["none", "bfloat16"])
def test_training_steps_with_the_fused_update_match_keras_adam(mixed_precision):
    """Three steps of a small model (embedding, two fused LSTM layers, dropout) with either update, in
    float32 and on the bfloat16 kernels."""
    config = RunConfig.from_flat(
        dict(
            vocab_size=20,
            embedding_dim=8,
            rnn_units=64,
            num_layers=2,
            batch_size=4,
            seq_length=6,
            dropout=0.2,
            mixed_precision=mixed_precision,
        )
    )
    ids = np.random.default_rng(3).integers(0, 20, size=(3, 4, 7)).astype(np.int32)
    weights = []
    for use_kernels in (True, False):
        keras.utils.set_random_seed(5)
        step = TrainStep(config, placement.resolve(config))
        if not use_kernels:
            step.optimizer._kernels = None
        for batch in ids:
            step.train(tf.constant(batch[:, :-1]), tf.constant(batch[:, 1:]), 0.01, step=1)
        weights.append([w.numpy() for w in step.model.trainable_variables])
        traced = step._train.get_concrete_function(
            tf.constant(ids[0, :, :-1]), tf.constant(ids[0, :, 1:]), tf.constant([0.01, 0.0]), tf.ones([4])
        )
        assert ("CharRnnAdam" in [op.type for op in traced.graph.get_operations()]) == use_kernels
    for fused, reference in zip(*weights, strict=True):
        np.testing.assert_array_equal(fused.view(np.uint32), reference.view(np.uint32))


def test_the_epsilon_forms_keep_their_classes():
    assert type(make_optimizer(OptimizationConfig())) is Adam
    assert type(make_optimizer(OptimizationConfig(adam_epsilon_form="pytorch"))) is BiasCorrectedEpsilonAdam
    assert make_optimizer(OptimizationConfig())._kernels is None
