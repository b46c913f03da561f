"""TrainStep.train: the rate and the stop vote it is given are those of the step it runs."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import RunConfig
from tf_charrnn.runtime import placement
from tf_charrnn.training.train_step import TrainStep


@pytest.mark.parametrize(
    "mixed_precision, fused_kernels",
    [("none", True), ("none", False), ("float16", False)],  # float16: Adam inside a LossScaleOptimizer
)
def test_each_step_updates_with_its_own_rate_and_reports_its_stop_vote(mixed_precision, fused_kernels):
    config = RunConfig.from_flat(
        dict(
            vocab_size=20,
            embedding_dim=8,
            rnn_units=64,
            num_layers=2,
            batch_size=4,
            seq_length=6,
            dropout=0.0,
            mixed_precision=mixed_precision,
        )
    )
    runtime = placement.resolve(config)
    if not fused_kernels:
        runtime = dataclasses.replace(runtime, fused_kernels=False, bfloat16_kernels=False)
    assert runtime.loss_scaling == (mixed_precision == "float16")
    keras.utils.set_random_seed(5)
    step = TrainStep(config, runtime)
    batch = np.random.default_rng(3).integers(0, 20, size=(4, 7)).astype(np.int32)
    inputs, targets = tf.constant(batch[:, :-1]), tf.constant(batch[:, 1:])

    def weights():
        return [w.numpy().copy() for w in step.model.trainable_variables]

    before = weights()
    result = step.train(inputs, targets, 0.0123, step=1)
    assert step.optimizer.learning_rate.numpy() == np.float32(0.0123)
    assert float(result["stop_votes"]) == 0.0
    moved = weights()
    assert all(not np.array_equal(a, b) for a, b in zip(before, moved, strict=True))

    result = step.train(inputs, targets, 0.0, stop=True, step=2)  # Adam at rate 0 moves nothing
    assert step.optimizer.learning_rate.numpy() == 0.0
    assert float(result["stop_votes"]) == 1.0
    for got, expected in zip(weights(), moved, strict=True):
        np.testing.assert_array_equal(got, expected)
