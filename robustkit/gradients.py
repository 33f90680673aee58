"""Taped input gradients: the one place robustkit opens a ``tf.GradientTape`` on inputs.

Attacks step along these gradients, saliency draws them and training regularises them. Every
function here runs eagerly or inside a ``tf.function``; under an outer tape on the weights the
results stay differentiable (second order, e.g. the gradient of ||∇x L||² w.r.t. the weights).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
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


def input_gradient_alignment(
    classifier: Classifier,
    x: tf.Tensor,
    x_other: tf.Tensor,
    y: tf.Tensor,
    *,
    loss: str | LossFunction = "ce",
    training: bool = False,
) -> tuple[tf.Tensor, InputGradients]:
    """Per-example cosine [N] between the input gradients ∇x L at x and at x_other (both
    [N, H, W, C]; GradAlign's measure), with the pass at x.

    cos_i = <g_i, g'_i> / (||g_i|| · ||g'_i||); an example whose gradient is exactly zero at
    either point has no direction to align and gets cosine 1. Under a tape on the weights the
    cosine is differentiable through both gradients (double backpropagation).
    """
    first = input_gradients(classifier, x, y, loss=loss, training=training)
    second = input_gradients(classifier, x_other, y, loss=loss, training=training)
    a = tf.reshape(first.gradient, (tf.shape(first.gradient)[0], -1))
    b = tf.reshape(second.gradient, (tf.shape(second.gradient)[0], -1))
    squared_a, squared_b = tf.reduce_sum(a * a, axis=1), tf.reduce_sum(b * b, axis=1)
    valid = (squared_a > 0) & (squared_b > 0)
    # Safe denominators where invalid, so neither the value nor its gradient is NaN there.
    scale = tf.math.rsqrt(tf.where(valid, squared_a, 1.0)) * tf.math.rsqrt(
        tf.where(valid, squared_b, 1.0)
    )
    cosine = tf.where(valid, tf.reduce_sum(a * b, axis=1) * scale, 1.0)
    return cosine, first


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


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of a model in order, descending into nested models (yielded before their
    own layers)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


@contextlib.contextmanager
def _patch_layer_calls(
    layers: Sequence[keras.layers.Layer],
    transform: Callable[[keras.layers.Layer, Any], Any],
) -> Iterator[None]:
    """While open, each call of one of ``layers`` from this thread returns
    ``transform(layer, output)`` instead of its output; calls from other threads pass straight
    through, and one patch at a time is in place (a lock), so the model stays usable from other
    threads. The layers' own ``call`` is restored on exit, so the model is left as it was."""
    with _LAYER_PATCH_LOCK:
        owner = threading.get_ident()
        saved = []

        def patched(layer: keras.layers.Layer, original_call: Callable[..., Any]) -> Any:
            def patched_call(*args: Any, **kwargs: Any) -> Any:
                output = original_call(*args, **kwargs)
                return transform(layer, output) if threading.get_ident() == owner else output

            return patched_call

        try:
            for layer in layers:
                patched_before, original_call = "call" in vars(layer), layer.call
                layer.call = patched(layer, original_call)
                saved.append((layer, patched_before, original_call))
            yield
        finally:
            for layer, patched_before, original_call in reversed(saved):
                if patched_before:
                    layer.call = original_call
                else:
                    del layer.call


@contextlib.contextmanager
def _watch_layer_output(
    layer: keras.layers.Layer, tape: tf.GradientTape, outputs: list[tf.Tensor]
) -> Iterator[None]:
    """While open, each call of ``layer`` from this thread appends its output to ``outputs`` and
    the tape watches it; calls from other threads pass straight through (see
    :func:`_patch_layer_calls`), and the layer's own ``call`` is restored on exit."""

    def watch(_: keras.layers.Layer, output: tf.Tensor) -> tf.Tensor:
        tape.watch(output)
        outputs.append(output)
        return output

    with _patch_layer_calls([layer], watch):
        yield


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


# Activations the guided rule covers: piecewise linear and non-decreasing, so f'(z) >= 0.
GUIDED_ACTIVATIONS = (keras.activations.relu, keras.activations.relu6, keras.activations.leaky_relu)
# Activations a guided pass runs plainly: the identity, and the output's normalization.
_PLAIN_ACTIVATIONS = (
    keras.activations.linear,
    keras.activations.softmax,
    keras.activations.log_softmax,
)
GUIDED_SUPPORTED = (
    "ReLU, ReLU6 / ReLU(max_value=...), ReLU(negative_slope=..., threshold=...), LeakyReLU "
    "and the activations relu, relu6, leaky_relu"
)


def is_relu_layer(layer: keras.layers.Layer) -> bool:
    """Whether the layer's output is a ReLU-family activation f(z), piecewise linear and
    non-decreasing: any ``ReLU`` layer (capped as ReLU6, with a negative slope or a threshold;
    Keras refuses negative slopes), ``LeakyReLU``, or a layer built with ``activation="relu"``,
    ``"relu6"`` or ``"leaky_relu"``."""
    if isinstance(layer, (keras.layers.ReLU, keras.layers.LeakyReLU)):
        return True
    return any(getattr(layer, "activation", None) is f for f in GUIDED_ACTIVATIONS)


def _unguided_activation(layer: keras.layers.Layer) -> str | None:
    """The name of the layer's nonlinear activation the guided rule does not cover (swish,
    GELU, sigmoid, ELU, PReLU, ...), else None."""
    if isinstance(layer, (keras.layers.ELU, keras.layers.PReLU)):
        return type(layer).__name__
    activation = getattr(layer, "activation", None)
    if not callable(activation) or is_relu_layer(layer):
        return None
    if any(activation is f for f in _PLAIN_ACTIVATIONS):
        return None
    return getattr(activation, "__name__", type(activation).__name__)


@tf.custom_gradient
def _positive_gradient_gate(output: tf.Tensor) -> tuple[tf.Tensor, Callable[..., tf.Tensor]]:
    """Identity forward; backward lets only positive gradients through."""
    return tf.identity(output), tf.nn.relu


def guided_relu_layers(classifier: Classifier) -> list[keras.layers.Layer]:
    """The ReLU-family layers (see :func:`is_relu_layer`) of the classifier's Keras model, at
    any depth, each once.

    InputError when the model is not Keras, has none, or has an activation the guided rule does
    not cover (swish, GELU, sigmoid, ...: no published guided rule; a guided pass would run
    them plainly and give a map that is neither guided backpropagation nor the gradient).
    """
    model = classifier.model
    if not isinstance(model, keras.Model):
        raise InputError("Guided backpropagation needs a Keras model inside the Classifier.")
    layers = {id(layer): layer for layer in all_layers(model)}.values()
    unguided: dict[str, list[str]] = {}
    for layer in layers:
        name = _unguided_activation(layer)
        if name is not None:
            unguided.setdefault(name, []).append(layer.name)
    if unguided:
        found = "; ".join(
            f"{name} ({len(names)} layer{'s' * (len(names) > 1)}, e.g. {names[0]!r})"
            for name, names in unguided.items()
        )
        raise InputError(
            f"Guided backpropagation is defined for {GUIDED_SUPPORTED}; model {model.name!r} "
            f"also has {found}, which have no guided rule. Use the gradient, SmoothGrad or "
            "integrated gradients methods instead."
        )
    relus = [layer for layer in layers if is_relu_layer(layer)]
    if not relus:
        raise InputError(
            f"Model {model.name!r} has no ReLU layer ({GUIDED_SUPPORTED}), so guided "
            "backpropagation would be the plain gradient; use the gradient method instead."
        )
    return relus


def guided_input_gradients(
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    loss: str | LossFunction = "logit",
    training: bool = False,
) -> InputGradients:
    """Guided-backpropagation "gradient" (Springenberg et al. 2015) w.r.t. the input x.

    Backward through every ReLU-family layer ``a = f(z)`` (see :func:`guided_relu_layers`),
    only the positive part of the incoming gradient passes, times the layer's own derivative:
    ``g_in = f'(z) * max(g_out, 0)``. For ReLU this is Springenberg et al.'s rule
    ``g_out * [z > 0] * [g_out > 0]``; for ReLU6 ``g_out * [0 < z < 6] * [g_out > 0]`` (only
    where the input is in the active range); for a slope a >= 0 below zero (LeakyReLU)
    ``g_out * (1 if z > 0 else a) * [g_out > 0]``. Since f' >= 0 for all of them, this equals
    ``max(f'(z) * g_out, 0)``, the positive part of the plain backward pass, as for ReLU. All
    other layers backpropagate as usual, so this is not the gradient of anything. ReLUs applied
    by code other than a Keras layer's output backpropagate plainly. The forward pass (logits,
    objective) is the ordinary one; the layers are patched only for this thread and only while
    it runs (see :func:`_patch_layer_calls`).
    """
    layers = guided_relu_layers(classifier)
    with _patch_layer_calls(layers, lambda _, output: _positive_gradient_gate(output)):
        return input_gradients(classifier, x, y, loss=loss, training=training)
