"""Taped input gradients: the one place robustkit opens a ``tf.GradientTape`` on inputs.

Attacks step along these gradients, saliency draws them and training regularises them. Every
function here runs eagerly or inside a ``tf.function``; under an outer tape on the weights the
results stay differentiable (second order, e.g. the gradient of ||∇x L||² w.r.t. the weights).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.losses import LossFunction, get_loss
from robustkit.models import Classifier


class InputGradients(NamedTuple):
    """Results of one forward + backward pass.

    gradient: d objective / d x, [N, H, W, C]; logits: [N, K]; loss: the per-example objective
    [N] (the loss, negated for targeted attacks).
    """

    gradient: tf.Tensor
    logits: tf.Tensor
    loss: tf.Tensor


def input_gradients(
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    loss: str | LossFunction = "ce",
    targeted: bool = False,
    training: bool = False,
) -> InputGradients:
    """Gradient of the per-example objective w.r.t. the pixel-space input x [N, H, W, C].

    The objective is ``loss(logits, y)``, or ``-loss(logits, y)`` when ``targeted`` (y then holds
    the target classes), so ascending it attacks. ``loss`` is "ce", "margin", "logit", "kl" or a
    callable ``(logits, y) -> [N]``; y may be any tensor that callable understands. Since each
    example's objective depends only on its own input, the gradient of the summed objective is the
    per-example gradient.
    """
    loss_function = get_loss(loss)
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = classifier.logits(x, training=training)
        objective = loss_function(logits, y)
        if targeted:
            objective = -objective
    gradient = tape.gradient(objective, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return InputGradients(gradient, logits, objective)


def input_gradient_penalty(
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    loss: str | LossFunction = "ce",
    training: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-example squared input-gradient norm ||∇x L||² [N], with the logits and loss.

    Call it under a tape that watches the weights to get the second-order gradient of the
    penalty w.r.t. the weights (double backpropagation).
    """
    result = input_gradients(classifier, x, y, loss=loss, training=training)
    flat = tf.reshape(result.gradient, (tf.shape(result.gradient)[0], -1))
    return tf.reduce_sum(tf.square(flat), axis=1), result.logits, result.loss


class ActivationGradients(NamedTuple):
    """Results of one forward + backward pass through an inner layer.

    activation: that layer's output [N, ...]; gradient: d objective / d activation, same shape;
    logits: [N, K]; loss: the per-example objective [N] (negated when targeted).
    """

    activation: tf.Tensor
    gradient: tf.Tensor
    logits: tf.Tensor
    loss: tf.Tensor


_LAYER_PATCH_LOCK = threading.RLock()


@contextlib.contextmanager
def _watch_layer_output(
    layer: keras.layers.Layer, tape: tf.GradientTape, outputs: list[tf.Tensor]
) -> Iterator[None]:
    """While open, each call of ``layer`` from this thread appends its output to ``outputs`` and
    the tape watches it; calls from other threads pass straight through, and one patch at a time
    is in place (a lock), so the model stays usable from other threads. The layer's own
    ``call`` is restored on exit, so the model is left as it was."""
    with _LAYER_PATCH_LOCK:
        owner = threading.get_ident()
        patched_before = "call" in vars(layer)
        original_call = layer.call

        def watched_call(*args: Any, **kwargs: Any) -> Any:
            output = original_call(*args, **kwargs)
            if threading.get_ident() == owner:
                tape.watch(output)
                outputs.append(output)
            return output

        layer.call = watched_call
        try:
            yield
        finally:
            if patched_before:
                layer.call = original_call
            else:
                del layer.call


def activation_gradients(
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    layer: keras.layers.Layer,
    *,
    loss: str | LossFunction = "ce",
    targeted: bool = False,
    training: bool = False,
) -> ActivationGradients:
    """Gradient of the per-example objective w.r.t. the output of ``layer`` (e.g. for Grad-CAM).

    ``layer`` is any Keras layer the classifier's forward pass calls exactly once, at any depth
    (Sequential, functional, nested or subclassed models): its output is taken from inside the
    ordinary forward pass, so no sub-model is built. Objective as in :func:`input_gradients`.
    """
    loss_function = get_loss(loss)
    x = tf.convert_to_tensor(x, tf.float32)
    outputs: list[tf.Tensor] = []
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        with _watch_layer_output(layer, tape, outputs):
            logits = classifier.logits(x, training=training)
        objective = loss_function(logits, y)
        if targeted:
            objective = -objective
    if len(outputs) != 1:
        raise InputError(
            f"Layer {layer.name!r} ran {len(outputs)} times in one forward pass; gradients "
            "w.r.t. its output need a layer that runs exactly once. Choose another layer."
        )
    gradient = tape.gradient(
        objective, outputs[0], unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return ActivationGradients(outputs[0], gradient, logits, objective)
