"""Per-example losses on logits [N, K] with integer class indices y [N].

Each returns a [N] tensor. They are the objectives attacks ascend (negated when targeted).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from robustkit.errors import InputError

LossFunction = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def cross_entropy(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of class y, computed stably from logits (nats)."""
    labels = tf.cast(y, tf.int32)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def margin(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Carlini-Wagner margin: best other logit minus the logit of y (> 0: misclassified)."""
    own = class_logit(logits, y)
    others = tf.where(tf.one_hot(y, tf.shape(logits)[-1]) > 0, -float("inf"), logits)
    return tf.reduce_max(others, axis=-1) - own


def class_logit(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """The logit of class y (what saliency maps explain)."""
    return tf.gather(logits, tf.cast(y, tf.int32), axis=-1, batch_dims=1)


def kl_divergence(logits: tf.Tensor, reference_probabilities: tf.Tensor) -> tf.Tensor:
    """KL(reference || softmax(logits)) per example, with reference probabilities [N, K] (nats)."""
    log_probabilities = tf.nn.log_softmax(logits)
    reference = tf.maximum(reference_probabilities, 1e-12)
    return tf.reduce_sum(reference * (tf.math.log(reference) - log_probabilities), axis=-1)


LOSSES: dict[str, LossFunction] = {
    "ce": cross_entropy,
    "margin": margin,
    "logit": class_logit,
    "kl": kl_divergence,
}


def get_loss(loss: str | LossFunction) -> LossFunction:
    """The loss function for a name in LOSSES, or the given callable."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise InputError(f"Unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable.")
    return LOSSES[loss]
