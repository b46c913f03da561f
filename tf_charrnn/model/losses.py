"""The sequence loss (mean next-character cross-entropy from logits), in nats, bits and perplexity."""

import math
from sys import float_info

import tensorflow as tf


def sequence_loss(targets: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
    """Mean sparse softmax cross-entropy over batch and time.

    Args:
      targets: int [B, T] next-character ids.
      logits: float [B, T, V] unnormalised scores.
      weights: optional float [B, T] per-position weights; the mean is weighted by them.

    Returns:
      float32 scalar, nats per character.
    """
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(targets, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def bits_per_char(nats: float) -> float:
    """Converts nats per character to bits per character."""
    return nats / math.log(2.0)


def perplexity(nats: float) -> float:
    """Per-character perplexity, exp(nats); inf when that overflows a float."""
    return math.exp(nats) if nats < math.log(float_info.max) else math.inf
