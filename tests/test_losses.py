import math

import numpy as np
import pytest

from tf_charrnn.model import losses


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
