"""Gradient saliency: vanilla gradient, gradient × input, SmoothGrad and Integrated Gradients.

Every gradient comes from :func:`robustkit.gradients.input_gradients`. One call runs as one
``tf.function``: a forward pass over the images (predictions, f(x)), then all
images × steps (or samples) gradients in chunks of ``internal_batch_size`` (see
:mod:`robustkit.saliency.engine`). The compiled function takes batches of any size, any number
of steps or samples and any chunk size without retracing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.gradients import input_gradients
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import DEFAULT_BLUR_SIGMA, make_baseline
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    chunked_logits,
    compiled,
    fill_predicted,
    get_objective,
    image_spec,
    objective_name,
    positive_int,
    prepare_inputs,
    random_rows,
    sum_over_points,
)
from robustkit.saliency.gradcam import grad_cam

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gauss_legendre")
AGGREGATIONS = ("mean", "abs", "square", "vargrad")


def quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes alpha in [0, 1] and weights (summing to 1) of a rule for the integral over [0, 1].

    Riemann rules use ``steps`` equal intervals (left, right or middle point of each);
    ``riemann_trapezoid`` uses ``steps`` equally spaced nodes including both ends;
    ``gauss_legendre`` uses the ``steps`` Gauss-Legendre nodes, exact for polynomials of
    degree < 2 * steps. Returns float64 arrays [steps].
    """
    steps = positive_int(steps, "steps")
    if rule == "riemann_left":
        alphas = np.arange(steps) / steps
    elif rule == "riemann_right":
        alphas = np.arange(1, steps + 1) / steps
    elif rule == "riemann_middle":
        alphas = (np.arange(steps) + 0.5) / steps
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise InputError("riemann_trapezoid needs steps >= 2 (both ends of the path).")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    elif rule == "gauss_legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    else:
        raise InputError(f"Unknown integration rule {rule!r}; use one of {RULES}.")
    return alphas, np.full(steps, 1.0 / steps)


def _path_function(classifier: Classifier, objective: LossFunction, baseline_score: bool) -> Any:
    """Compiled ``(x, baseline, alphas, weights, targets, chunk)`` ->
    (logits, targets, f(x), f(baseline) or zeros, sum_j w_j grad f(x' + alpha_j (x - x')))."""

    def run(x, baseline, alphas, weights, targets, chunk):
        logits = chunked_logits(classifier, x, chunk)
        targets = fill_predicted(targets, logits)
        score = objective(logits, targets)

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
    return tf.function(run, input_signature=signature)


def _noise_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, sigma, samples, seed, first_image, targets, chunk)`` -> (logits, targets,
    f(x), sum g, sum |g|, sum g²) over gradients g at x + sigma * noise; the noise of sample j
    of image i is fixed by the seed and row (first_image + i) * samples + j."""

    def run(x, sigma, samples, seed, first_image, targets, chunk):
        logits = chunked_logits(classifier, x, chunk)
        targets = fill_predicted(targets, logits)

        def contributions(image_index, sample_index):
            image_number = first_image + tf.cast(image_index, tf.int64)
            noise = random_rows(
                image_number * tf.cast(samples, tf.int64) + tf.cast(sample_index, tf.int64),
                classifier.input_shape,
                seed,
                tf.random.stateless_normal,
            )
            point = tf.gather(x, image_index) + sigma * noise
            gradient = input_gradients(
                classifier, point, tf.gather(targets, image_index), loss=objective
            ).gradient
            return gradient, tf.abs(gradient), tf.square(gradient)

        zeros = tf.zeros_like(x)
        sums = sum_over_points(tf.shape(x)[0], samples, chunk, contributions, (zeros, zeros, zeros))
        return (logits, targets, objective(logits, targets), *sums)

    signature = [
        image_spec(classifier),
        tf.TensorSpec((), tf.float32),
        tf.TensorSpec((), tf.int32),
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((), tf.int64),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int32),
    ]
    return tf.function(run, input_signature=signature)


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


def _common_options(objective: Any, internal_batch_size: int) -> dict[str, Any]:
    return {"objective": objective_name(objective), "internal_batch_size": internal_batch_size}


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
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    logits, targets, score, _, gradients = _integrate(
        classifier, x, tf.zeros_like(x), np.ones(1), np.ones(1), targets, chunk, objective, False
    )
    return Attribution(
        maps=gradients,
        target=targets.astype(np.int64),
        predicted=np.argmax(logits, axis=-1),
        method="gradient",
        options=_common_options(objective, int(chunk)),
        score=score,
    )


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
    first_image: int = 0,
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
            only on the seed and first_image + i, not on ``internal_batch_size``.
        first_image: index of x[0] in a longer stream of images, so that a stream explained
            in batches (first_image = images before the batch) gets the noise of one big call.
        target, objective, internal_batch_size: as for :func:`gradient`.
    """
    if aggregation not in AGGREGATIONS:
        raise InputError(f"Unknown aggregation {aggregation!r}; use one of {AGGREGATIONS}.")
    if not float(noise) >= 0:
        raise InputError(f"noise must be a fraction of the input range >= 0, got {noise!r}.")
    samples = positive_int(samples, "samples")
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    low, high = classifier.bounds
    function = compiled(
        classifier,
        ("noise", objective),
        lambda: _noise_function(classifier, get_objective(objective)),
    )
    results = function(
        x,
        tf.constant(float(noise) * (high - low), tf.float32),
        tf.constant(samples, tf.int32),
        tf.constant(int(seed), tf.int64),
        tf.constant(int(first_image), tf.int64),
        targets,
        chunk,
    )
    logits, targets, score, total, total_abs, total_square = (r.numpy() for r in results)
    mean = total.astype(np.float64) / samples
    maps = {
        "mean": lambda: mean,
        "abs": lambda: total_abs.astype(np.float64) / samples,
        "square": lambda: total_square.astype(np.float64) / samples,
        "vargrad": lambda: np.maximum(total_square / samples - mean**2, 0.0),
    }[aggregation]()
    options = {
        "noise": float(noise),
        "samples": samples,
        "aggregation": aggregation,
        "seed": int(seed),
        "first_image": int(first_image),
        **_common_options(objective, int(chunk)),
    }
    return Attribution(
        maps=maps.astype(np.float32),
        target=targets.astype(np.int64),
        predicted=np.argmax(logits, axis=-1),
        method="smoothgrad",
        options=options,
        score=score,
    )


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
    first_image: int = 0,
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
        seed, first_image: seed of the "uniform" baseline; image i's noise is fixed by the seed
            and first_image + i (see :func:`smoothgrad`).
        target, objective, internal_batch_size: as for :func:`gradient`.
    """
    alphas, weights = quadrature(rule, steps)
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    reference = make_baseline(
        classifier, x, baseline, seed=seed, first_image=first_image, blur_sigma=blur_sigma
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
        **({"seed": int(seed), "first_image": int(first_image)} if kind == "uniform" else {}),
        **_common_options(objective, int(chunk)),
    }
    return Attribution(
        maps=maps,
        target=targets.astype(np.int64),
        predicted=np.argmax(logits, axis=-1),
        method="integrated_gradients",
        options=options,
        score=score,
        baseline_score=baseline_score,
        delta=totals - (score.astype(np.float64) - baseline_score),
    )


METHODS = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "grad_cam": grad_cam,
}
METHOD_ALIASES = {
    "ig": "integrated_gradients",
    "gradxinput": "gradient_x_input",
    "gradcam": "grad_cam",
}


def get_method(method: str | Any) -> Any:
    """The attribution function for a name in :data:`METHODS` or :data:`METHOD_ALIASES`, or the
    given callable ``(classifier, x, target, **options) -> Attribution``."""
    if callable(method):
        return method
    name = METHOD_ALIASES.get(method, method)
    if name not in METHODS:
        known = sorted([*METHODS, *METHOD_ALIASES])
        raise InputError(f"Unknown saliency method {method!r}; use one of {known}.")
    return METHODS[name]


def attribute(
    classifier: Classifier,
    x: Any,
    method: str = "integrated_gradients",
    target: Any = None,
    **options: Any,
) -> Attribution:
    """Run the named method (see :data:`METHODS`, aliases "ig", "gradxinput", "gradcam") with
    its keyword options."""
    return get_method(method)(classifier, x, target, **options)
