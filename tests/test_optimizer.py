"""Adam's two epsilon forms and its beta_2 (training/optimizer.py) against the formulas they stand for."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_charrnn.config import OptimizationConfig
from tf_charrnn.training.optimizer import BiasCorrectedEpsilonAdam, make_optimizer

_GRADIENTS = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32) * np.float32(1e-6)


def _adam_reference(gradients, learning_rate, epsilon, form, beta_1=0.9, beta_2=0.999):
    """The weights after Adam's steps on `gradients` from zero, in float64: Kingma and Ba's Algorithm 1
    (PyTorch's) for form "pytorch", its epsilon-hat variant (Keras') for form "keras"."""
    weights, m, v = np.zeros(gradients.shape[1]), 0.0, 0.0
    for step, gradient in enumerate(gradients.astype(np.float64), start=1):
        m = beta_1 * m + (1 - beta_1) * gradient
        v = beta_2 * v + (1 - beta_2) * gradient**2
        m_hat, v_hat = m / (1 - beta_1**step), v / (1 - beta_2**step)
        if form == "pytorch":
            weights -= learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
        else:
            weights -= learning_rate * m_hat / (np.sqrt(v_hat) + epsilon / np.sqrt(1 - beta_2**step))
    return weights


def _train(form, epsilon, gradients=_GRADIENTS, beta_2=0.999):
    config = OptimizationConfig(
        learning_rate=0.01, adam_epsilon=epsilon, adam_epsilon_form=form, adam_beta2=beta_2
    )
    optimizer = make_optimizer(config)
    weights = tf.Variable(tf.zeros(gradients.shape[1]))

    @tf.function(jit_compile=True)
    def step(gradient):
        optimizer.apply_gradients([(gradient, weights)])

    for gradient in gradients:
        step(tf.constant(gradient))
    return weights.numpy()


@pytest.mark.parametrize("beta_2", [0.999, 0.99])
@pytest.mark.parametrize("form", ["pytorch", "keras"])
def test_each_form_is_the_update_it_names(form, beta_2):
    # Gradients of 1e-6 against an epsilon of 1e-6: where the two forms part.
    want = _adam_reference(_GRADIENTS, 0.01, 1e-6, form, beta_2=beta_2)
    np.testing.assert_allclose(_train(form, 1e-6, beta_2=beta_2), want, rtol=1e-5, atol=1e-9)
    if beta_2 != 0.999:  # the reference tells the two apart
        assert not np.allclose(want, _adam_reference(_GRADIENTS, 0.01, 1e-6, form), rtol=1e-3)


def test_the_forms_differ_where_epsilon_is_near_the_gradients_and_agree_where_it_is_not():
    pytorch, keras_form = _train("pytorch", 1e-6), _train("keras", 1e-6)
    # Keras' epsilon acts 31.6x larger at the first step: its weights move far less.
    assert np.all(np.abs(pytorch) > 2 * np.abs(keras_form))
    large = _GRADIENTS * np.float32(1e6)
    np.testing.assert_allclose(_train("pytorch", 1e-8, large), _train("keras", 1e-8, large), rtol=1e-5)


def test_the_keras_form_is_keras_own_adam():
    # Keras' class, its update on the fused kernels where they are given (bit for bit Keras' own: there
    # tests/test_fused_adam.py compares the two).
    assert isinstance(make_optimizer(OptimizationConfig()), keras.optimizers.Adam)
    assert type(make_optimizer(OptimizationConfig())).update_step is keras.optimizers.Adam.update_step
    optimizer = make_optimizer(OptimizationConfig(adam_epsilon=1e-8, adam_epsilon_form="pytorch"))
    assert type(optimizer) is BiasCorrectedEpsilonAdam and optimizer.epsilon == 1e-8


@pytest.mark.parametrize("on_kernels", [False, True])
@pytest.mark.parametrize("form", ["keras", "pytorch"])
def test_weight_decay_shrinks_the_weight_matrices_alone(form, on_kernels):
    """With zero gradients Adam moves nothing, so one step leaves each weight matrix at w (1 - lr wd) and
    biases and the embedding as they were; at weight_decay 0 nothing moves at all."""
    from tf_charrnn.model import native

    kernels = native.load() if on_kernels else None
    if on_kernels and kernels is None:
        pytest.fail("the fused kernels did not build")
    rng = np.random.default_rng(1)
    for weight_decay in (0.1, 0.0):
        config = OptimizationConfig(learning_rate=0.01, adam_epsilon_form=form, weight_decay=weight_decay)
        optimizer = make_optimizer(config, kernels=kernels)
        names = ["embeddings", "kernel", "recurrent_kernel", "bias"]
        shapes = {name: (8,) if name == "bias" else (4, 8) for name in names}
        start = {name: rng.normal(size=shapes[name]).astype(np.float32) for name in names}
        variables = [keras.Variable(start[name], name=name) for name in names]
        optimizer.build(variables)

        @tf.function
        def step():
            optimizer.apply([tf.zeros_like(v) for v in variables], variables)  # noqa: B023

        step()
        for name, variable in zip(names, variables, strict=True):
            decayed = name in ("kernel", "recurrent_kernel") and weight_decay > 0
            want = start[name] * np.float32(1 - 0.01 * weight_decay) if decayed else start[name]
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, atol=0)
            if not decayed:
                np.testing.assert_array_equal(variable.numpy(), start[name])
