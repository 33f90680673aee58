"""Perturbation saliency from forward passes only: Occlusion and RISE (KernelSHAP and LIME
are in :mod:`robustkit.saliency.coalitions`).

For models whose gradients are useless (saturated, masked, not differentiable). Each call runs
as one ``tf.function``: all images × windows (masks, coalitions) forward passes in chunks of
``internal_batch_size`` (see :mod:`robustkit.saliency.engine`), so memory stays flat as the
number of masks grows. Masked pixels take the value of a baseline image, as the IG baselines
("black", "white", "uniform", "blur", a number or an array). Random masks are keyed by
(seed, first_index + image index, mask index), so they do not depend on batch or chunk sizes.
"""

from __future__ import annotations

from typing import Any

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
    common_options,
    compiled,
    explained,
    get_objective,
    image_spec,
    prepare_inputs,
    sum_over_points,
)
from robustkit.saliency.masks import patch_shape, point_keys, rise_masks


def _occlusion_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, baseline, targets, patch [2], stride [2], chunk)`` -> (logits, targets,
    f(x), maps [N, H, W, 1]): the mean score drop of the windows covering each pixel."""
    height, width, _ = classifier.input_shape
    sizes = tf.constant([height, width])

    def run(x, baseline, targets, patch, stride, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)
        windows = (sizes - patch + stride - 1) // stride + 1  # the last reaches the border

        def contributions(image_index, window_index):
            top = window_index // windows[1] * stride[0]
            left = window_index % windows[1] * stride[1]
            rows = tf.range(height)[None, :] - top[:, None]
            columns = tf.range(width)[None, :] - left[:, None]
            in_rows = (rows >= 0) & (rows < patch[0])
            in_columns = (columns >= 0) & (columns < patch[1])
            occluded = (in_rows[:, :, None] & in_columns[:, None, :])[..., None]
            point = tf.where(occluded, tf.gather(baseline, image_index), tf.gather(x, image_index))
            drop = tf.gather(score, image_index) - objective(
                classifier.logits(point), tf.gather(targets, image_index)
            )
            occluded = tf.cast(occluded, tf.float32)
            return drop[:, None, None, None] * occluded, occluded

        zeros = tf.zeros((tf.shape(x)[0], height, width, 1))
        total, coverage = sum_over_points(
            tf.shape(x)[0], windows[0] * windows[1], chunk, contributions, (zeros, zeros)
        )
        return logits, targets, score, total / coverage

    vector = tf.TensorSpec((2,), tf.int32)
    spec = image_spec(classifier)
    signature = [spec, spec, tf.TensorSpec((None,), tf.int32), vector, vector, SCALAR_INT]
    return tf.function(run, input_signature=signature)


def occlusion(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    patch_size: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    baseline: Any = "black",
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014): the drop f(x) - f(x with a window set to the
    baseline), for windows of ``patch_size`` slid by ``stride``; a pixel's map is the mean drop
    of the windows covering it (with stride = patch size: its window's drop).

    Args:
        patch_size: window (rows, columns) in pixels, or one int; default an 8 x 8 grid.
        stride: step between windows in pixels; default the patch size. Windows start at
            0, stride, 2 stride, ... up to the first that reaches the bottom (right) border,
            cut there, so every pixel is covered.
        baseline: what an occluded pixel shows: "black", "white", "uniform" (seed 0),
            "blur", a number (e.g. 0.5) or an array [H, W, C] / [N, H, W, C] in the bounds.
        target, objective, internal_batch_size: as for :func:`~robustkit.saliency.gradient`.

    Returns:
        An :class:`Attribution` with maps [N, H, W, 1] in objective units.
    """
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    height, width, _ = classifier.input_shape
    patch = patch_shape(patch_size, height, width)
    steps = patch if stride is None else patch_shape(stride, height, width)
    reference = make_baseline(classifier, x, baseline)
    function = compiled(
        classifier,
        ("occlusion", objective),
        lambda: _occlusion_function(classifier, get_objective(objective)),
    )
    logits, targets, score, maps = (
        r.numpy()
        for r in function(x, reference, targets, tf.constant(patch), tf.constant(steps), chunk)
    )
    options = {
        "patch_size": list(patch),
        "stride": list(steps),
        "baseline": baseline_name(baseline),
        **common_options(objective, chunk),
    }
    return build_attribution("occlusion", maps, logits, targets, score, options)


def _rise_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, baseline, targets, grid_size, keep_probability, samples, seed,
    first_index, chunk)`` -> (logits, targets, f(x), maps [N, H, W, 1])."""
    height, width, _ = classifier.input_shape

    def run(x, baseline, targets, grid_size, keep_probability, samples, seed, first_index, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)

        def contributions(image_index, mask_index):
            keys = point_keys(seed, first_index, image_index, mask_index)
            mask = rise_masks(keys, grid_size, keep_probability, height, width)
            start = tf.gather(baseline, image_index)
            point = start + mask * (tf.gather(x, image_index) - start)
            value = objective(classifier.logits(point), tf.gather(targets, image_index))
            return value[:, None, None, None] * mask, mask

        zeros = tf.zeros((tf.shape(x)[0], height, width, 1))
        total, coverage = sum_over_points(
            tf.shape(x)[0], samples, chunk, contributions, (zeros, zeros)
        )
        return logits, targets, score, tf.math.divide_no_nan(total, coverage)

    spec = image_spec(classifier)
    signature = [
        spec,
        spec,
        tf.TensorSpec((None,), tf.int32),
        SCALAR_INT,
        SCALAR_FLOAT,
        SCALAR_INT,
        *SEED_SPECS,
        SCALAR_INT,
    ]
    return tf.function(run, input_signature=signature)


def rise(
    classifier: Classifier,
    x: Any,
    target: Any = None,
    *,
    samples: int = 2000,
    grid_size: int = 7,
    keep_probability: float = 0.5,
    baseline: Any = "black",
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> Attribution:
    """RISE (Petsiuk et al. 2018): map(u) = sum_m f(x_m) M_m(u) / sum_m M_m(u), the mean score
    of the masked images weighted by how much each keeps pixel u.

    ``x_m = b + M_m * (x - b)`` for ``samples`` random smooth masks M_m in [0, 1] (see
    :func:`~robustkit.saliency.masks.rise_masks`). Dividing by the masks' own sum rather than
    by samples * keep_probability (the paper) removes the noise of how often u was kept; both
    tend to E[f(x_M) | u kept]. The paper explains the probability (objective="probability").

    Args:
        samples: random masks per image.
        grid_size: cells per side of the low-resolution mask grid.
        keep_probability: chance that a cell shows the image.
        baseline: what a masked pixel shows (the paper: "black").
        seed, first_index: the masks of image i are fixed by the seed and first_index + i (see
            :func:`~robustkit.saliency.smoothgrad`).
        target, objective, internal_batch_size: as for :func:`~robustkit.saliency.gradient`.
    """
    samples = positive_int(samples, "samples")
    grid_size = positive_int(grid_size, "grid_size")
    if not 0 < float(keep_probability) < 1:
        raise InputError(f"keep_probability must be in (0, 1), got {keep_probability!r}.")
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    reference = make_baseline(classifier, x, baseline, seed=seed, first_index=first_index)
    function = compiled(
        classifier,
        ("rise", objective),
        lambda: _rise_function(classifier, get_objective(objective)),
    )
    results = function(
        x,
        reference,
        targets,
        tf.constant(grid_size),
        tf.constant(float(keep_probability)),
        tf.constant(samples),
        tf.constant(int(seed), tf.int32),
        tf.constant(int(first_index), tf.int64),
        chunk,
    )
    logits, targets, score, maps = (r.numpy() for r in results)
    options = {
        "samples": samples,
        "grid_size": grid_size,
        "keep_probability": float(keep_probability),
        "baseline": baseline_name(baseline),
        "seed": int(seed),
        "first_index": int(first_index),
        **common_options(objective, chunk),
    }
    return build_attribution("rise", maps, logits, targets, score, options)
