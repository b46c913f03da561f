"""The sequence loss (mean next-character cross-entropy from logits), in nats, bits and perplexity."""

import math
from collections.abc import Callable
from sys import float_info
from types import ModuleType

import tensorflow as tf

from tf_charrnn.model import native


def sequence_loss(
    targets: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None, use_kernels: bool = False
) -> tf.Tensor:
    """Mean sparse softmax cross-entropy over batch and time.

    Args:
      targets: int [B, T] next-character ids.
      logits: float [B, T, V] unnormalised scores.
      weights: optional float [B, T] per-position weights; the mean is weighted by them.
      use_kernels: compute it on the fused kernel where the kernels are built (the runtime decides, as
        for the model's layers: False on a GPU and under XLA); else TensorFlow's op.

    Returns:
      float32 scalar, nats per character.
    """
    labels, logits = tf.cast(targets, tf.int32), tf.cast(logits, tf.float32)
    kernels = native.load() if use_kernels else None
    if kernels is None:
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    else:
        losses = cross_entropy(kernels, labels, logits)
    if weights is None:
        return tf.reduce_mean(losses)
    weights = tf.cast(weights, tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def cross_entropy(kernels: ModuleType, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits) on the fused kernel
    (kernels/cross_entropy.cc: one pass per row instead of six over the tensor), with the same gradient:
    the loss's gradient times the kernel's backprop.

    Args:
      kernels: the module `native.load()` returns.
      labels: int32 [...], each in [0, V).
      logits: float32 [..., V].

    Returns:
      float32 [...], each position's loss in nats.
    """
    rows = tf.reshape(labels, [-1])

    @tf.custom_gradient
    def forward(flat_logits: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
        loss, backprop = kernels.char_rnn_softmax_cross_entropy(flat_logits, rows)
        return loss, lambda dloss: dloss[:, tf.newaxis] * backprop

    classes = tf.shape(logits)[-1]
    return tf.reshape(forward(tf.reshape(logits, [-1, classes])), tf.shape(labels))


def bits_per_char(nats: float) -> float:
    """Converts nats per character to bits per character."""
    return nats / math.log(2.0)


def perplexity(nats: float) -> float:
    """Per-character perplexity, exp(nats); inf when that overflows a float."""
    return math.exp(nats) if nats < math.log(float_info.max) else math.inf
