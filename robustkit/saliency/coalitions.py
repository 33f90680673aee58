"""KernelSHAP and LIME: regressions of forward passes on coalitions of image features.

Features are the patches of a grid or the images' own regions (superpixels). Both methods share
one compiled loop (see :mod:`robustkit.saliency.engine`): for each image and sampled coalition
z, one forward pass on x_z (x on the features in z, the baseline elsewhere), accumulated into the
weighted normal equations of the regression, so memory stays flat as the samples grow; the small
per-image solves then run in NumPy. Coalitions are keyed by (seed, first_index + image index,
sample index), so they do not depend on batch or chunk sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError, positive_int
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import baseline_name, make_baseline
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    SCALAR_FLOAT,
    SCALAR_INT,
    SEED_SPECS,
    build_attribution,
    chunked_logits,
    common_options,
    compiled,
    explained,
    get_objective,
    image_spec,
    prepare_inputs,
    sum_over_points,
)
from robustkit.saliency.masks import (
    feature_labels,
    lime_coalitions,
    patch_shape,
    shapley_coalitions,
)
from robustkit.tracing import compile_with_signature

Coalitions = Callable[..., tf.Tensor]  # (seed, first_index, image, sample, counts, F) -> bool


def _coalition_function(
    classifier: Classifier, objective: LossFunction, draw: Coalitions, kernel: bool
) -> Any:
    """Compiled ``(x, baseline, targets, labels, counts, samples, seed, first_index,
    kernel_width, chunk)`` -> (logits, targets, f(x), f(baseline), gram [N, F+1, F+1],
    moments [N, F+1]): the weighted sums of d d^T and d * f(x_z) over coalitions z, with
    d = (1, z) and x_z showing x on the features in z, the baseline elsewhere."""
    height, width, _ = classifier.input_shape

    def run(x, baseline, targets, labels, counts, samples, seed, first_index, kernel_width, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)
        baseline_score = objective(chunked_logits(classifier, baseline, chunk), targets)
        features = tf.reduce_max(counts)

        def contributions(image_index, sample_index):
            image_counts = tf.gather(counts, image_index)
            members = draw(seed, first_index, image_index, sample_index, image_counts, features)
            shown = tf.gather(members, tf.gather(labels, image_index), batch_dims=1)
            point = tf.where(
                tf.reshape(shown, (-1, height, width, 1)),
                tf.gather(x, image_index),
                tf.gather(baseline, image_index),
            )
            value = objective(classifier.logits(point), tf.gather(targets, image_index))
            z = tf.cast(members, tf.float64)
            weight = tf.ones_like(value, tf.float64)
            if kernel:  # LIME: exp(-d² / width²), d the cosine distance from all features on
                share = tf.reduce_sum(z, axis=1) / tf.cast(image_counts, tf.float64)
                distance = 1.0 - tf.sqrt(share)
                weight = tf.exp(-tf.square(distance) / tf.cast(kernel_width, tf.float64) ** 2)
            design = tf.concat([tf.ones_like(z[:, :1]), z], axis=1)
            gram = weight[:, None, None] * design[:, :, None] * design[:, None, :]
            return gram, (weight * tf.cast(value, tf.float64))[:, None] * design

        n = tf.shape(x)[0]
        sums = sum_over_points(
            n,
            samples,
            chunk,
            contributions,
            (
                tf.zeros((n, features + 1, features + 1), tf.float64),
                tf.zeros((n, features + 1), tf.float64),
            ),
        )
        return (logits, targets, score, baseline_score, *sums)

    spec = image_spec(classifier)
    signature = [
        spec,
        spec,
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None, height * width), tf.int32),
        tf.TensorSpec((None,), tf.int32),
        SCALAR_INT,
        *SEED_SPECS,
        SCALAR_FLOAT,
        SCALAR_INT,
    ]
    return compile_with_signature(run, signature)


def _fit_coalitions(
    method: str,
    classifier: Classifier,
    x: Any,
    target: Any,
    *,
    samples: int,
    patch_size: Any,
    segments: Any,
    baseline: Any,
    seed: int,
    first_index: int,
    objective: str | LossFunction,
    internal_batch_size: int,
    kernel_width: float = 0.0,
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, dict[str, Any]]:
    """The compiled coalition sums of ``method`` ("kernel_shap" or "lime"), with the feature
    labels [N, H * W], counts [N] and the options shared by both methods."""
    samples = positive_int(samples, "samples")
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    height, width, _ = classifier.input_shape
    labels, counts = feature_labels(int(x.shape[0]), height, width, segments, patch_size)
    if method == "kernel_shap" and counts.min() < 2:
        raise InputError("KernelSHAP needs at least 2 features per image; use smaller patches.")
    reference = make_baseline(classifier, x, baseline, seed=seed, first_index=first_index)
    draw, kernel = (lime_coalitions, True) if method == "lime" else (shapley_coalitions, False)
    function = compiled(
        classifier,
        (method, objective),
        lambda: _coalition_function(classifier, get_objective(objective), draw, kernel),
    )
    results = function(
        x,
        reference,
        targets,
        tf.constant(labels),
        tf.constant(counts),
        tf.constant(samples),
        tf.constant(int(seed), tf.int32),
        tf.constant(int(first_index), tf.int64),
        tf.constant(float(kernel_width)),
        chunk,
    )
    options = {
        "samples": samples,
        "features": "segments" if segments is not None else "grid",
        **(
            {}
            if segments is not None
            else {"patch_size": list(patch_shape(patch_size, height, width))}
        ),
        "baseline": baseline_name(baseline),
        "seed": int(seed),
        "first_index": int(first_index),
        **common_options(objective, chunk),
    }
    return tuple(r.numpy() for r in results), labels, counts, options


def _feature_maps(
    values: list[np.ndarray], labels: np.ndarray, classifier: Classifier
) -> np.ndarray:
    """Maps [N, H, W, 1] giving every pixel (labels [N, H * W]) its feature's value."""
    height, width, _ = classifier.input_shape
    pixels = [
        image_values[image_labels]
        for image_values, image_labels in zip(values, labels, strict=True)
    ]
    return np.stack(pixels).reshape(-1, height, width, 1)


def kernel_shap(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    samples: int = 1000,
    patch_size: int | tuple[int, int] | None = None,
    segments: Any = None,
    baseline: Any = "black",
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """KernelSHAP (Lundberg & Lee 2017): Shapley values of image features (patches or
    superpixels), "absent" features showing the baseline.

    phi = argmin sum_z (f(x_z) - f(b) - z . phi)^2 subject to sum(phi) = f(x) - f(b), over
    ``samples`` coalitions z drawn from the Shapley kernel (in complementary pairs, see
    :func:`~robustkit.saliency.masks.shapley_coalitions`); exact once the coalitions span
    the features when f is additive in them. Every pixel gets its feature's phi.

    Args:
        samples: coalitions per image.
        patch_size: features are the patches of this grid (default 8 x 8 patches)...
        segments: ...unless integer regions [H, W] or [N, H, W] are given (superpixels).
        baseline: what an absent feature shows (as for :func:`occlusion`).
        seed, first_index: image i's coalitions are fixed by the seed and first_index + i.
        target, objective, internal_batch_size: as for :func:`~robustkit.saliency.gradient`.

    Returns:
        An :class:`Attribution` with maps [N, H, W, 1] in objective units, ``baseline_score``
        f(b) and ``delta`` = sum(phi) - (f(x) - f(b)) (0 up to rounding).
    """
    sums, labels, counts, options = _fit_coalitions(
        "kernel_shap",
        classifier,
        x,
        target,
        samples=samples,
        patch_size=patch_size,
        segments=segments,
        baseline=baseline,
        seed=seed,
        first_index=first_index,
        objective=objective,
        internal_batch_size=internal_batch_size,
    )
    logits, targets, score, baseline_score, gram, moments = sums
    values = []
    for i, count in enumerate(counts):
        inner = gram[i, 1 : count + 1, 1 : count + 1]
        right = moments[i, 1 : count + 1] - baseline_score[i] * gram[i, 1 : count + 1, 0]
        system = np.block([[inner, np.ones((count, 1))], [np.ones((1, count)), np.zeros((1, 1))]])
        gap = float(score[i]) - float(baseline_score[i])
        solution = np.linalg.lstsq(system, np.append(right, gap), rcond=None)[0]
        values.append(solution[:count])
    maps = _feature_maps(values, labels, classifier)
    delta = np.array([v.sum() for v in values]) - (score.astype(np.float64) - baseline_score)
    return build_attribution(
        "kernel_shap",
        maps,
        logits,
        targets,
        score,
        options,
        baseline_score=baseline_score,
        delta=delta,
    )


def lime(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    samples: int = 1000,
    patch_size: int | tuple[int, int] | None = None,
    segments: Any = None,
    baseline: Any = "black",
    kernel_width: float = 0.25,
    ridge: float = 1.0,
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """LIME (Ribeiro et al. 2016) on image features: the coefficients of a weighted ridge
    regression of f(x_z) on the coalitions z.

    (c, beta) = argmin sum_z pi(z) (f(x_z) - c - z . beta)^2 + ridge * |beta|^2 over
    ``samples`` coalitions with each feature on with probability 1/2, weighted by
    pi(z) = exp(-d(z)^2 / kernel_width^2), d = 1 - sqrt(|z| / F) the cosine distance to the
    all-on coalition (as ``lime_image``). Every pixel gets its feature's beta.

    Args:
        kernel_width: width of the proximity kernel (cosine distance units).
        ridge: L2 penalty on beta (not on the intercept c); 0 gives weighted least squares.
        samples, patch_size, segments, baseline, seed, first_index, target, objective,
        internal_batch_size: as for :func:`kernel_shap`.
    """
    if not float(kernel_width) > 0:
        raise InputError(f"kernel_width must be > 0, got {kernel_width!r}.")
    if not float(ridge) >= 0:
        raise InputError(f"ridge must be >= 0, got {ridge!r}.")
    sums, labels, counts, options = _fit_coalitions(
        "lime",
        classifier,
        x,
        target,
        samples=samples,
        patch_size=patch_size,
        segments=segments,
        baseline=baseline,
        seed=seed,
        first_index=first_index,
        objective=objective,
        internal_batch_size=internal_batch_size,
        kernel_width=kernel_width,
    )
    logits, targets, score, _, gram, moments = sums
    values = []
    for i, count in enumerate(counts):
        penalty = float(ridge) * np.diag(np.r_[0.0, np.ones(count)])
        system = gram[i, : count + 1, : count + 1] + penalty
        solution = np.linalg.lstsq(system, moments[i, : count + 1], rcond=None)[0]
        values.append(solution[1:])
    maps = _feature_maps(values, labels, classifier)
    options = {**options, "kernel_width": float(kernel_width), "ridge": float(ridge)}
    return build_attribution("lime", maps, logits, targets, score, options)
