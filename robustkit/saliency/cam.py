"""The CAM family beyond Grad-CAM: Grad-CAM++, LayerCAM (gradients) and ScoreCAM (forward
passes).

All read the activations A [h, w, K] of an inner layer (default the last 2-D convolution, see
:func:`~robustkit.saliency.gradcam.find_layer`) from inside the ordinary forward pass, and give
maps [N, H, W, 1] >= 0 upsampled bilinearly to the image size.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from robustkit.gradients import activation_gradients
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import baseline_name, make_baseline
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    build_attribution,
    chunked_logits,
    common_options,
    compiled,
    explained,
    get_objective,
    image_spec,
    over_chunks,
    prepare_inputs,
    sum_over_points,
)
from robustkit.saliency.gradcam import cam_attribution, feature_map_layer, require_feature_map
from robustkit.tracing import compile_with_signature


def grad_cam_plus_plus_rule(activation: tf.Tensor, gradient: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++'s map before the ReLU: sum_k w_k A_k with
    w_k = sum_ij alpha_ij^k ReLU(g_ij^k) and alpha = g² / (2 g² + (sum_ab A_ab^k) g³)
    (0 where the denominator is 0); activation and gradient g [B, h, w, K] -> [B, h, w, 1]."""
    square = tf.square(gradient)
    denominator = 2.0 * square + tf.reduce_sum(activation, axis=(1, 2), keepdims=True) * (
        square * gradient
    )
    nonzero = denominator != 0
    alpha = tf.where(nonzero, square / tf.where(nonzero, denominator, 1.0), 0.0)
    weights = tf.reduce_sum(alpha * tf.nn.relu(gradient), axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * activation, -1, keepdims=True)


def layer_cam_rule(activation: tf.Tensor, gradient: tf.Tensor) -> tf.Tensor:
    """LayerCAM's map before the ReLU: sum_k ReLU(g^k) * A^k, elementwise per position;
    [B, h, w, K] -> [B, h, w, 1]."""
    return tf.reduce_sum(tf.nn.relu(gradient) * activation, -1, keepdims=True)


def grad_cam_plus_plus(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    layer: str | keras.layers.Layer | None = None,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Grad-CAM++ (Chattopadhyay et al. 2018): ReLU(sum_k w_k A_k), w_k as in
    :func:`grad_cam_plus_plus_rule`.

    The paper derives alpha for the score exp(S) with S the objective, so its higher
    derivatives are powers of the first; its exp(S) factor in w_k, one positive constant per
    image, is left out (it only scales the map). Arguments as for
    :func:`~robustkit.saliency.grad_cam`.
    """
    return cam_attribution(
        classifier,
        x,
        target,
        method="grad_cam_plus_plus",
        rule=grad_cam_plus_plus_rule,
        layer=layer,
        objective=objective,
        internal_batch_size=internal_batch_size,
    )


def layer_cam(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    layer: str | keras.layers.Layer | None = None,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(d f / d A^k) * A^k), each position
    weighted by its own positive gradient, so shallower layers give finer maps. Arguments as
    for :func:`~robustkit.saliency.grad_cam`."""
    return cam_attribution(
        classifier,
        x,
        target,
        method="layer_cam",
        rule=layer_cam_rule,
        layer=layer,
        objective=objective,
        internal_batch_size=internal_batch_size,
    )


def _score_cam_function(
    classifier: Classifier, layer: keras.layers.Layer, objective: LossFunction
) -> Any:
    """Compiled ``(x, baseline, targets, chunk)`` -> (logits, targets, f(x), f(baseline),
    maps [N, H, W, 1])."""
    height, width, _ = classifier.input_shape

    def activations_of(image_index: tf.Tensor, x: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        result = activation_gradients(
            classifier,
            tf.gather(x, image_index),
            tf.gather(targets, image_index),
            layer,
            loss=objective,
        )
        require_feature_map(layer, result.activation.shape)
        return result.activation

    def run(x, baseline, targets, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)
        baseline_score = objective(chunked_logits(classifier, baseline, chunk), targets)
        n = tf.shape(x)[0]
        probe = activations_of(tf.zeros((1,), tf.int32), x, targets)
        (activations,) = sum_over_points(
            n,
            1,
            chunk,
            lambda image_index, _: (activations_of(image_index, x, targets),),
            (tf.zeros(tf.concat([[n], tf.shape(probe)[1:]], 0)),),
        )
        channels = tf.shape(activations)[-1]
        # (image, channel) pairs [P, 2] whose map varies: a constant map gives mask 0, x_k = b
        # and w_k = f(b) - f(b) = 0, so those pairs (dead channels, 1x1 layers) need no pass
        varying = tf.reduce_max(activations, axis=(1, 2)) > tf.reduce_min(activations, (1, 2))
        pairs = tf.cast(tf.where(varying), tf.int32)

        def add_increases(points: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
            chosen = tf.gather(pairs, points)
            image_index, channel_index = chosen[:, 0], chosen[:, 1]
            channel = tf.gather(
                tf.gather(activations, image_index), channel_index, axis=3, batch_dims=1
            )
            upsampled = tf.image.resize(channel[..., None], (height, width), method="bilinear")
            low = tf.reduce_min(upsampled, axis=(1, 2, 3), keepdims=True)
            high = tf.reduce_max(upsampled, axis=(1, 2, 3), keepdims=True)
            mask = tf.math.divide_no_nan(upsampled - low, high - low)
            start = tf.gather(baseline, image_index)
            point = start + mask * (tf.gather(x, image_index) - start)
            increase = objective(
                classifier.logits(point), tf.gather(targets, image_index)
            ) - tf.gather(baseline_score, image_index)
            return tf.tensor_scatter_nd_add(weights, chosen, increase)

        weights = over_chunks(
            tf.shape(pairs)[0], chunk, add_increases, tf.zeros(tf.stack([n, channels]))
        )
        cam = tf.nn.relu(tf.reduce_sum(weights[:, None, None, :] * activations, -1, keepdims=True))
        maps = tf.image.resize(cam, (height, width), method="bilinear")
        return logits, targets, score, baseline_score, maps

    spec = image_spec(classifier)
    signature = [spec, spec, tf.TensorSpec((None,), tf.int32), tf.TensorSpec((), tf.int32)]
    return compile_with_signature(run, signature)


def score_cam(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    layer: str | keras.layers.Layer | None = None,
    baseline: Any = "black",
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Score-CAM (Wang et al. 2020): ReLU(sum_k w_k A_k) with w_k = f(x_k) - f(b), the increase
    of the objective when the image is shown through channel k's activation map.

    ``x_k = b + H_k * (x - b)``, H_k the channel's map upsampled bilinearly to the image size
    and min-max normalised to [0, 1] (0 where it is constant); b the baseline (the paper: a
    black image). One forward pass per image and channel whose activation map is not constant
    (a constant one has w_k = 0), ``internal_batch_size`` at a time; no gradients. The paper
    explains the probability (objective="probability").

    Args:
        baseline: what the masked-out image shows (as for :func:`~robustkit.saliency.occlusion`).
        layer, target, objective, internal_batch_size: as for
            :func:`~robustkit.saliency.grad_cam`.

    Returns:
        An :class:`Attribution` with maps [N, H, W, 1] and ``baseline_score`` f(b).
    """
    chosen = feature_map_layer(classifier, layer)
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    reference = make_baseline(classifier, x, baseline)
    function = compiled(
        classifier,
        ("score_cam", chosen, objective),
        lambda: _score_cam_function(classifier, chosen, get_objective(objective)),
    )
    logits, targets, score, baseline_score, maps = (
        r.numpy() for r in function(x, reference, targets, chunk)
    )
    options = {
        "layer": chosen.name,
        "baseline": baseline_name(baseline),
        **common_options(objective, chunk),
    }
    return build_attribution(
        "score_cam", maps, logits, targets, score, options, baseline_score=baseline_score
    )
