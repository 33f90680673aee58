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


def _sorted_top(logits: tf.Tensor, k: int) -> tf.Tensor:
    """The k largest logits [N, k] in descending order (the smallest repeated when K < k)."""
    classes = logits.shape[-1]
    top = tf.math.top_k(logits, k=min(k, classes) if classes else k).values
    missing = k - top.shape[-1]
    return tf.concat([top, tf.repeat(top[:, -1:], missing, axis=1)], 1) if missing > 0 else top


def dlr(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Difference of logits ratio (Croce & Hein 2020): -(z_y - max_{i≠y} z_i) / (z_π1 - z_π3),
    with z_π the logits sorted descending. Invariant to shifting and scaling the logits; > 0
    when misclassified."""
    top = _sorted_top(logits, 3)
    return margin(logits, y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: tf.Tensor, y: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Targeted DLR (Croce & Hein 2020): -(z_y - z_t) / (z_π1 - (z_π3 + z_π4) / 2), ascended to
    move the logit of ``target`` t above that of the true class y."""
    top = _sorted_top(logits, 4)
    gap = class_logit(logits, target) - class_logit(logits, y)
    return gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


ATTACK_LOSSES: dict[str, LossFunction] = {
    "ce": cross_entropy,
    "margin": margin,
    "dlr": dlr,
}
# Objectives input gradients can be taken of: the attack losses, the class logit that saliency
# maps explain, and the KL divergence TRADES ascends with a callable reference.
LOSSES: dict[str, LossFunction] = {**ATTACK_LOSSES, "logit": class_logit, "kl": kl_divergence}


def get_loss(loss: str | LossFunction) -> LossFunction:
    """The objective for a name in LOSSES, or the given callable."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise InputError(f"Unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable.")
    return LOSSES[loss]


def get_attack_loss(loss: str | LossFunction) -> LossFunction:
    """The attack loss for a name in ATTACK_LOSSES, or the given callable."""
    if callable(loss):
        return loss
    if loss == "logit":
        raise InputError(
            "'logit' ascends the true class's logit, which makes the model more confident: it "
            "is a saliency objective, not an attack loss. Use 'ce', 'margin' or 'dlr'."
        )
    if loss not in ATTACK_LOSSES:
        raise InputError(
            f"Unknown loss {loss!r}; use one of {sorted(ATTACK_LOSSES)} or a callable."
        )
    return ATTACK_LOSSES[loss]
