"""Grad-CAM (Selvaraju et al. 2017): class activation maps from an inner convolutional layer.

The gradient w.r.t. the layer's activations comes from
:func:`robustkit.gradients.activation_gradients`, which takes the activations from inside the
ordinary forward pass, so any model structure works: Sequential, functional, nested models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.gradients import activation_gradients, all_layers
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    build_attribution,
    check_classifier,
    chunked_logits,
    common_options,
    compiled,
    fill_predicted,
    get_objective,
    image_spec,
    prepare_inputs,
    sum_over_points,
)
from robustkit.tracing import compile_with_signature

CONV_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


def find_layer(
    classifier: Classifier, layer: str | keras.layers.Layer | None
) -> keras.layers.Layer:
    """The layer Grad-CAM reads: the given layer or name, else the last 2-D convolution."""
    model = classifier.model
    if not isinstance(model, keras.Model):
        raise InputError("Grad-CAM needs a Keras model inside the Classifier, not a callable.")
    if isinstance(layer, keras.layers.Layer):
        return layer
    layers = list(all_layers(model))
    if layer is None:
        convolutions = [
            candidate for candidate in layers if isinstance(candidate, CONV_LAYER_TYPES)
        ]
        if not convolutions:
            raise InputError(
                f"Model {model.name!r} has no 2-D convolution layer; pass layer= with the name "
                "of a layer whose output is [N, height, width, channels]."
            )
        return convolutions[-1]
    matches = [candidate for candidate in layers if candidate.name == layer]
    if len(matches) != 1:
        names = ", ".join(candidate.name for candidate in layers)
        problem = "no layer" if not matches else f"{len(matches)} layers"
        raise InputError(f"Model {model.name!r} has {problem} named {layer!r}; layers: {names}.")
    return matches[0]


def require_feature_map(layer: keras.layers.Layer, shape: Any) -> None:
    """InputError unless the layer's output shape is [N, height, width, channels]."""
    if len(shape) != 4:
        raise InputError(
            f"Layer {layer.name!r} outputs shape {tuple(shape)}; class activation maps need "
            "[N, height, width, channels]. Choose a convolutional layer."
        )


def feature_map_layer(
    classifier: Classifier, layer: str | keras.layers.Layer | None
) -> keras.layers.Layer:
    """:func:`find_layer`, checked to output a feature map where its shape is declared (a layer
    of a subclassed model has none; its shape is then checked while the forward pass is
    traced)."""
    chosen = find_layer(check_classifier(classifier), layer)
    try:
        declared = chosen.output.shape
    except (AttributeError, ValueError):
        declared = None
    if declared is not None:
        require_feature_map(chosen, declared)
    return chosen


CamRule = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def grad_cam_rule(activation: tf.Tensor, gradient: tf.Tensor) -> tf.Tensor:
    """Grad-CAM's map before the ReLU: sum_k w_k A_k with w_k the spatial mean of d f / d A_k;
    activation and gradient [B, h, w, K] -> [B, h, w, 1]."""
    channel_weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(channel_weights * activation, -1, keepdims=True)


def _cam_function(
    classifier: Classifier, layer: keras.layers.Layer, objective: LossFunction, rule: CamRule
) -> Any:
    """Compiled ``(x, targets, chunk)`` -> (logits, targets, f(x), maps [N, H, W, 1]): the
    ReLU of ``rule(activation, gradient)`` upsampled bilinearly to the image size."""
    height, width, _ = classifier.input_shape

    def run(x, targets, chunk):
        logits = chunked_logits(classifier, x, chunk)
        targets = fill_predicted(targets, logits)

        def contributions(image_index, _):
            result = activation_gradients(
                classifier,
                tf.gather(x, image_index),
                tf.gather(targets, image_index),
                layer,
                loss=objective,
            )
            require_feature_map(layer, result.activation.shape)
            cam = tf.nn.relu(rule(result.activation, result.gradient))
            return (tf.image.resize(cam, (height, width), method="bilinear"),)

        n = tf.shape(x)[0]
        (maps,) = sum_over_points(n, 1, chunk, contributions, (tf.zeros((n, height, width, 1)),))
        return logits, targets, objective(logits, targets), maps

    signature = [
        image_spec(classifier),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int32),
    ]
    return compile_with_signature(run, signature)


def cam_attribution(
    classifier: Classifier,
    x: Any,
    target: Any,
    *,
    method: str,
    rule: CamRule,
    layer: str | keras.layers.Layer | None,
    objective: str | LossFunction,
    internal_batch_size: int,
) -> Attribution:
    """The gradient CAM named ``method`` whose pre-ReLU map is ``rule``; arguments as for
    :func:`grad_cam`."""
    chosen = feature_map_layer(classifier, layer)
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    function = compiled(
        classifier,
        (method, chosen, objective),
        lambda: _cam_function(classifier, chosen, get_objective(objective), rule),
    )
    logits, targets, score, maps = (r.numpy() for r in function(x, targets, chunk))
    options = {"layer": chosen.name, **common_options(objective, chunk)}
    return build_attribution(method, maps, logits, targets, score, options)


def grad_cam(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    layer: str | keras.layers.Layer | None = None,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Grad-CAM maps: ReLU(sum_k w_k A_k) with w_k the spatial mean of d f / d A_k, upsampled
    bilinearly to the image size.

    Args:
        layer: a layer name or layer (at any depth of nested models); default the last 2-D
            convolution of the model.
        target, objective, internal_batch_size: as for :func:`~robustkit.saliency.gradient`.

    Returns:
        An :class:`Attribution` with maps [N, H, W, 1] (>= 0, objective units per activation
        unit), the chosen layer's name in ``options["layer"]``.
    """
    return cam_attribution(
        classifier,
        x,
        target,
        method="grad_cam",
        rule=grad_cam_rule,
        layer=layer,
        objective=objective,
        internal_batch_size=internal_batch_size,
    )
