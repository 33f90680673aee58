"""Gradient saliency: vanilla gradient, gradient × input, guided backpropagation, SmoothGrad
(and its SquareGrad and VarGrad aggregations) and Integrated Gradients.

Every gradient comes from :func:`robustkit.gradients.input_gradients` (guided backpropagation:
:func:`robustkit.gradients.guided_input_gradients`). One call runs as one
``tf.function``: a forward pass over the images (predictions, f(x)), then all
images × steps (or samples) gradients in chunks of ``internal_batch_size`` (see
:mod:`robustkit.saliency.engine`); the single-gradient methods take the predictions, f(x) and
the gradient from one forward and one backward pass per chunk. The compiled function takes
batches of any size, any number of steps or samples and any chunk size without retracing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError, positive_int
from robustkit.gradients import guided_input_gradients, guided_relu_layers, input_gradients
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import DEFAULT_BLUR_SIGMA, make_baseline
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    SCALAR_INT,
    build_attribution,
    check_classifier,
    chunked_logits,
    common_options,
    compiled,
    explained,
    fill_predicted,
    get_objective,
    image_spec,
    prepare_inputs,
    sum_over_points,
)
from robustkit.saliency.masks import point_keys
from robustkit.saliency.quadrature import quadrature
from robustkit.tracing import compile_with_signature

AGGREGATIONS = ("mean", "abs", "square", "vargrad")
# The per-image sums over noisy copies each SmoothGrad aggregation needs, and their summands.
AGGREGATION_SUMS = {
    "mean": ("gradient",),
    "abs": ("abs",),
    "square": ("square",),
    "vargrad": ("gradient", "square"),
}
SUMMANDS = {"gradient": lambda g: g, "abs": tf.abs, "square": tf.square}


def _gradient_function(classifier: Classifier, objective: LossFunction, guided: bool) -> Any:
    """Compiled ``(x, targets, chunk)`` -> (grad f(x), logits, targets, f(x)), with
    guided-backpropagation gradients when ``guided``: the logits, the resolved targets (see
    :func:`fill_predicted`) and the gradient come from one forward and one backward pass per
    chunk of images, f(x) from those logits."""
    taped_gradients = guided_input_gradients if guided else input_gradients

    def resolved_objective(logits: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
        return objective(logits, fill_predicted(codes, logits))

    def run(x, targets, chunk):
        n = tf.shape(x)[0]

        def contributions(image_index, _):
            codes = tf.gather(targets, image_index)
            result = taped_gradients(
                classifier, tf.gather(x, image_index), codes, loss=resolved_objective
            )
            return result.gradient, result.logits, fill_predicted(codes, result.logits)

        accumulators = (
            tf.zeros_like(x),
            tf.zeros((n, classifier.num_classes)),
            tf.zeros((n,), tf.int32),
        )
        gradient, logits, targets = sum_over_points(n, 1, chunk, contributions, accumulators)
        # f(x) on the whole batch, as the other methods take it (log_softmax bits depend on shape)
        return gradient, logits, targets, objective(logits, targets)

    signature = [image_spec(classifier), tf.TensorSpec((None,), tf.int32), SCALAR_INT]
    return compile_with_signature(run, signature)


def _path_function(classifier: Classifier, objective: LossFunction, baseline_score: bool) -> Any:
    """Compiled ``(x, baseline, alphas, weights, targets, chunk)`` ->
    (logits, targets, f(x), f(baseline) or zeros, sum_j w_j grad f(x' + alpha_j (x - x')))."""

    def run(x, baseline, alphas, weights, targets, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)

        def contributions(image_index, step_index):
            start = tf.gather(baseline, image_index)
            alpha = tf.reshape(tf.gather(alphas, step_index), (-1, 1, 1, 1))
            point = start + alpha * (tf.gather(x, image_index) - start)
            gradient = input_gradients(
                classifier, point, tf.gather(targets, image_index), loss=objective
            ).gradient
            return (tf.reshape(tf.gather(weights, step_index), (-1, 1, 1, 1)) * gradient,)

        (path_sum,) = sum_over_points(
            tf.shape(x)[0], tf.size(alphas), chunk, contributions, (tf.zeros_like(x),)
        )
        if baseline_score:
            reference = objective(chunked_logits(classifier, baseline, chunk), targets)
        else:
            reference = tf.zeros_like(score)
        return logits, targets, score, reference, path_sum

    spec = image_spec(classifier)
    vector = tf.TensorSpec((None,), tf.float32)
    signature = [
        spec,
        spec,
        vector,
        vector,
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int32),
    ]
    return compile_with_signature(run, signature)


def _noise_function(classifier: Classifier, objective: LossFunction, sums: tuple[str, ...]) -> Any:
    """Compiled ``(x, sigma, samples, seed, first_index, targets, chunk)`` -> (logits, targets,
    f(x), then one per-image sum per name in ``sums`` (see :data:`SUMMANDS`: of g, |g| or g²))
    over gradients g at x + sigma * noise; the noise of sample j of image i is fixed by the
    seed, first_index + i and j alone (:func:`point_keys`)."""

    def run(x, sigma, samples, seed, first_index, targets, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)

        def contributions(image_index, sample_index):
            keys = point_keys(seed, first_index, image_index, sample_index)
            noise = seeding.normal(keys, classifier.input_shape)
            point = tf.gather(x, image_index) + sigma * noise
            gradient = input_gradients(
                classifier, point, tf.gather(targets, image_index), loss=objective
            ).gradient
            return tuple(SUMMANDS[name](gradient) for name in sums)

        zeros = tuple(tf.zeros_like(x) for _ in sums)
        totals = sum_over_points(tf.shape(x)[0], samples, chunk, contributions, zeros)
        return (logits, targets, score, *totals)

    signature = [
        image_spec(classifier),
        tf.TensorSpec((), tf.float32),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int32),
    ]
    return compile_with_signature(run, signature)


def _integrate(
    classifier: Classifier,
    x: tf.Tensor,
    baseline: tf.Tensor,
    alphas: np.ndarray,
    weights: np.ndarray,
    targets: tf.Tensor,
    chunk: tf.Tensor,
    objective: str | LossFunction,
    baseline_score: bool,
) -> tuple[np.ndarray, ...]:
    function = compiled(
        classifier,
        ("path", objective, baseline_score),
        lambda: _path_function(classifier, get_objective(objective), baseline_score),
    )
    results = function(
        x,
        baseline,
        tf.constant(alphas, tf.float32),
        tf.constant(weights, tf.float32),
        targets,
        chunk,
    )
    return tuple(r.numpy() for r in results)


def gradient(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Vanilla gradient d f / d x (Simonyan et al. 2014) of the target's objective.

    Args:
        classifier: the model in pixel space.
        x: images float32 [N, H, W, C] in the classifier's bounds.
        target: None or "predicted" (the predicted class), a class index, or class indices [N]
            such as the true labels.
        objective: what is explained: "logit" (default), "probability", "log_probability" or a
            callable ``(logits [N, K], target [N]) -> [N]``.
        internal_batch_size: images per forward/backward pass (memory bound).

    Returns:
        An :class:`Attribution` whose maps [N, H, W, C] are objective units per pixel unit.
    """
    return _single_gradient(classifier, x, target, objective, internal_batch_size, guided=False)


def _single_gradient(
    classifier: Classifier,
    x: Any,
    target: Any,
    objective: str | LossFunction,
    internal_batch_size: int,
    guided: bool,
) -> Attribution:
    """The vanilla (or guided-backpropagation) gradient at x, as an Attribution."""
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    function = compiled(
        classifier,
        ("gradient", objective, guided),
        lambda: _gradient_function(classifier, get_objective(objective), guided),
    )
    gradients, logits, targets, score = (r.numpy() for r in function(x, targets, chunk))
    method = "guided_backprop" if guided else "gradient"
    options = common_options(objective, chunk)
    return build_attribution(method, gradients, logits, targets, score, options)


def guided_backprop(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Guided backpropagation (Springenberg et al. 2015): the gradient with every ReLU-family
    layer (ReLU, ReLU6, LeakyReLU) passing back only positive gradients, where its input is in
    its active range (see :func:`robustkit.gradients.guided_input_gradients`); arguments as for
    :func:`gradient`.

    Beware: guided backpropagation fails the model-randomization sanity check (Adebayo et al.
    2018): its maps barely change when the upper layers' weights are randomized, because they
    mostly reconstruct the image (edges) rather than explain the class. Needs a Keras model
    with ReLU-family layers and no other nonlinear activation (swish, GELU, sigmoid, ... have
    no guided rule and are refused).
    """
    guided_relu_layers(check_classifier(classifier))  # fail early, before tracing
    return _single_gradient(classifier, x, target, objective, internal_batch_size, guided=True)


def gradient_x_input(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Gradient × input (Shrikumar et al. 2016): x * d f / d x, elementwise; arguments as for
    :func:`gradient`. Maps are in objective units."""
    result = gradient(
        classifier, x, target, objective=objective, internal_batch_size=internal_batch_size
    )
    result.maps = result.maps * np.asarray(x, dtype=np.float32)
    result.method = "gradient_x_input"
    return result


def smoothgrad(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    noise: float = 0.15,
    samples: int = 50,
    aggregation: str = "mean",
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """SmoothGrad (Smilkov et al. 2017): gradients averaged over noisy copies of each image.

    Args:
        noise: standard deviation of the Gaussian noise as a fraction of the input range
            (``high - low`` of the bounds); noisy copies are not clipped to the bounds.
        samples: noisy copies per image.
        aggregation: "mean" of the gradients, "abs" (mean of |g|), "square" (SmoothGrad-Sq,
            mean of g²) or "vargrad" (variance of g over the samples, Adebayo et al. 2018).
        seed: seed of the noise; the same seed gives the same bytes. Image i's noise depends
            only on the seed and first_index + i, not on ``internal_batch_size``.
        first_index: index of x[0] in a longer stream of images, so that a stream explained
            in batches (first_index = images before the batch) gets the noise of one big call.
        target, objective, internal_batch_size: as for :func:`gradient`.
    """
    if aggregation not in AGGREGATIONS:
        raise InputError(f"Unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}.")
    if not float(noise) >= 0:
        raise InputError(f"noise must be a fraction of the input range >= 0, got {noise!r}.")
    samples = positive_int(samples, "samples")
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    low, high = classifier.bounds
    sums = AGGREGATION_SUMS[aggregation]
    function = compiled(
        classifier,
        ("noise", objective, sums),
        lambda: _noise_function(classifier, get_objective(objective), sums),
    )
    results = function(
        x,
        tf.constant(float(noise) * (high - low), tf.float32),
        tf.constant(samples, tf.int32),
        tf.constant(int(seed), tf.int64),
        tf.constant(int(first_index), tf.int64),
        targets,
        chunk,
    )
    logits, targets, score, *totals = (r.numpy() for r in results)
    if aggregation == "vargrad":
        total, total_square = totals
        maps = np.maximum(total_square / samples - (total.astype(np.float64) / samples) ** 2, 0.0)
    else:
        maps = totals[0].astype(np.float64) / samples
    options = {
        "noise": float(noise),
        "samples": samples,
        "aggregation": aggregation,
        "seed": int(seed),
        "first_index": int(first_index),
        **common_options(objective, chunk),
    }
    return build_attribution("smoothgrad", maps, logits, targets, score, options)


def integrated_gradients(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    baseline: Any = "black",
    steps: int = 50,
    rule: str = "gauss_legendre",
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Integrated Gradients (Sundararajan et al. 2017) along the straight path from x' to x.

    attribution = (x - x') * integral_0^1 grad f(x' + a (x - x')) da, with the integral taken by
    ``rule`` over ``steps`` gradient evaluations per image. Completeness: the attributions of
    an image sum to f(x) - f(x'); the returned ``delta`` is the per-example error of that sum.

    Args:
        baseline: x': "black", "white", "uniform" (seeded noise in the bounds), "blur" (Gaussian
            blur of ``blur_sigma`` pixels) or an array [H, W, C] or [N, H, W, C] in the bounds.
        steps: gradient evaluations per image.
        rule: "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid" or
            "gauss_legendre" (default: the most accurate for a smooth path).
        seed, first_index: seed of the "uniform" baseline; image i's noise is fixed by the seed
            and first_index + i (see :func:`smoothgrad`).
        target, objective, internal_batch_size: as for :func:`gradient`.
    """
    alphas, weights = quadrature(rule, steps)
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    reference = make_baseline(
        classifier, x, baseline, seed=seed, first_index=first_index, blur_sigma=blur_sigma
    )
    logits, targets, score, baseline_score, path_sum = _integrate(
        classifier, x, reference, alphas, weights, targets, chunk, objective, True
    )
    maps = (x.numpy() - reference.numpy()) * path_sum
    totals = maps.reshape(len(maps), -1).sum(axis=1, dtype=np.float64)
    kind = baseline if isinstance(baseline, str) else "array"
    options = {
        "baseline": kind,
        "steps": int(steps),
        "rule": rule,
        **({"blur_sigma": float(blur_sigma)} if kind == "blur" else {}),
        **({"seed": int(seed), "first_index": int(first_index)} if kind == "uniform" else {}),
        **common_options(objective, chunk),
    }
    return build_attribution(
        "integrated_gradients",
        maps,
        logits,
        targets,
        score,
        options,
        baseline_score=baseline_score,
        delta=totals - (score.astype(np.float64) - baseline_score),
    )


def square_grad(classifier: Classifier, x: Any, target: Any = None, **options: Any) -> Attribution:
    """SquareGrad (Hooker et al. 2019, "SmoothGrad-Squared"): the mean of g² over noisy copies,
    i.e. :func:`smoothgrad` with ``aggregation="square"``; options as for :func:`smoothgrad`."""
    result = smoothgrad(classifier, x, target, aggregation="square", **options)
    result.method = "square_grad"
    return result


def vargrad(classifier: Classifier, x: Any, target: Any = None, **options: Any) -> Attribution:
    """VarGrad (Adebayo et al. 2018): the variance of g over noisy copies, i.e.
    :func:`smoothgrad` with ``aggregation="vargrad"``; options as for :func:`smoothgrad`."""
    result = smoothgrad(classifier, x, target, aggregation="vargrad", **options)
    result.method = "vargrad"
    return result
