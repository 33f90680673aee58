"""Perturbation saliency from forward passes only: Occlusion and RISE (KernelSHAP and LIME
are in :mod:`robustkit.saliency.coalitions`).

For models whose gradients are useless (saturated, masked, not differentiable). Each call runs
as one ``tf.function``: all images × windows (masks, coalitions) forward passes in chunks of
``internal_batch_size`` (see :mod:`robustkit.saliency.engine`), so memory stays flat as the
number of masks grows. Masked pixels take the value of a baseline image, as the IG baselines
("black", "white", "uniform", "blur", a number or an array). RISE's random masks, shared by
all images as in the paper, are keyed by (seed, mask index), so they do not depend on batch or
chunk sizes.
"""

from __future__ import annotations

import math
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
    common_options,
    compiled,
    explained,
    get_objective,
    image_spec,
    over_chunks,
    prepare_inputs,
    sum_over_points,
)
from robustkit.saliency.masks import patch_shape, rise_draws, rise_mask_factors, shared_keys
from robustkit.tracing import compile_with_signature


def _window_cover(count: tf.Tensor, stride: tf.Tensor, patch: tf.Tensor, size: int) -> tf.Tensor:
    """bool [count, size]: which of ``size`` pixels along one axis window k covers (windows of
    ``patch`` pixels starting at 0, stride, 2 stride, ...)."""
    starts = tf.range(count)[:, None] * stride
    pixels = tf.range(size)[None, :]
    return (pixels >= starts) & (pixels < starts + patch)


def _occlusion_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, baseline, targets, patch [2], stride [2], block, chunk)`` -> (logits,
    targets, f(x), maps [N, H, W, 1]): the mean score drop of the windows covering each pixel;
    ``block`` divides the width, the patch width and the stride (their gcd).

    The loop keeps only each window's drop (a table [N, windows]); the windows are a grid of
    row spans times column spans, so the sum of the drops covering a pixel is one product
    rows^T @ drops @ columns per image, and the number of windows covering it is the number of
    row spans covering its row times the column spans covering its column. An occluded image
    is a copy of x with only the window's pixels written, ``block`` pixels of a row at a time
    (a select over the whole image costs about as much as a small model's forward pass)."""
    height, width, channels = classifier.input_shape
    sizes = tf.constant([height, width])

    def run(x, baseline, targets, patch, stride, block, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)
        n = tf.shape(x)[0]
        windows = (sizes - patch + stride - 1) // stride + 1  # the last reaches the border
        count = windows[0] * windows[1]
        in_rows = _window_cover(windows[0], stride[0], patch[0], height)  # [rows, H]
        in_columns = _window_cover(windows[1], stride[1], patch[1], width)  # [columns, W]
        last_run = width // block - 1

        def in_runs(images):  # [B, H, W, C] -> [B, H, W / block, block * C]
            return tf.reshape(images, tf.stack([-1, height, width // block, block * channels]))

        def drops(image_index, window_index):
            # a copy of x with the window's pixels set to the baseline, written in runs of
            # ``block`` pixels of a row (rows and runs past the border clipped onto it: the same
            # pixels written twice with the same values)
            tops = window_index // windows[1] * stride[0]
            runs = window_index % windows[1] * stride[1] // block
            rows = tf.minimum(tops[:, None] + tf.range(patch[0])[None, :], height - 1)
            columns = tf.minimum(runs[:, None] + tf.range(patch[1] // block)[None, :], last_run)
            shape = tf.stack([tf.size(window_index), patch[0], patch[1] // block])
            rows = tf.broadcast_to(rows[:, :, None], shape)
            columns = tf.broadcast_to(columns[:, None, :], shape)
            images = tf.broadcast_to(image_index[:, None, None], shape)
            slots = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
            values = tf.gather_nd(in_runs(baseline), tf.stack([images, rows, columns], axis=-1))
            pixels = tf.stack([slots, rows, columns], axis=-1)
            point = tf.tensor_scatter_nd_update(in_runs(tf.gather(x, image_index)), pixels, values)
            point = tf.reshape(point, (-1, height, width, channels))
            drop = tf.gather(score, image_index) - objective(
                classifier.logits(point), tf.gather(targets, image_index)
            )
            return (drop[:, None] * tf.one_hot(window_index, count),)

        (table,) = sum_over_points(n, count, chunk, drops, (tf.zeros((n, count)),))
        table = tf.reshape(table, tf.stack([n, windows[0], windows[1]]))
        in_rows, in_columns = tf.cast(in_rows, tf.float32), tf.cast(in_columns, tf.float32)
        total = tf.einsum("rh,nrc,cw->nhw", in_rows, table, in_columns)
        coverage = tf.reduce_sum(in_rows, 0)[:, None] * tf.reduce_sum(in_columns, 0)[None, :]
        return logits, targets, score, (total / coverage)[..., None]

    vector = tf.TensorSpec((2,), tf.int32)
    spec = image_spec(classifier)
    signature = [
        spec,
        spec,
        tf.TensorSpec((None,), tf.int32),
        vector,
        vector,
        SCALAR_INT,
        SCALAR_INT,
    ]
    return compile_with_signature(run, signature)


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
    block = tf.constant(math.gcd(width, patch[1], steps[1]))
    function = compiled(
        classifier,
        ("occlusion", objective),
        lambda: _occlusion_function(classifier, get_objective(objective)),
    )
    logits, targets, score, maps = (
        r.numpy()
        for r in function(
            x, reference, targets, tf.constant(patch), tf.constant(steps), block, chunk
        )
    )
    options = {
        "patch_size": list(patch),
        "stride": list(steps),
        "baseline": baseline_name(baseline),
        **common_options(objective, chunk),
    }
    return build_attribution("occlusion", maps, logits, targets, score, options)


def _rise_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, baseline [N or 1, H, W, C], targets, grid_size, keep_probability,
    samples, seed, first_index, chunk)`` -> (logits, targets, f(x), maps [N, H, W, 1]).

    The masks' draws (g x g cells and two shifts each) are made once, before the loops. Points
    are numbered t = m * N + i (mask m of image i), so a chunk of B points builds only the
    about B / N + 1 masks it shows, once for all its images, and keeps only the scores
    f(x_m) (a table [masks, N], 4 bytes a forward pass). A second, forward-free loop builds
    each mask once more and adds scores^T @ masks and the masks' own sum (the same for every
    image) over blocks of masks."""
    height, width, channels = classifier.input_shape

    def run(x, baseline, targets, grid_size, keep_probability, samples, seed, first_index, chunk):
        logits, targets, score = explained(classifier, objective, x, targets, chunk)
        n = tf.shape(x)[0]
        difference = x - baseline

        grids, shifts = rise_draws(
            shared_keys(seed, tf.range(samples)), grid_size, keep_probability, height, width
        )

        def masks(mask_index):  # [K] -> [K, H, W * C]: each mask repeated over the channels
            grid = tf.gather(grids, mask_index)
            rows, columns = rise_mask_factors(grid, tf.gather(shifts, mask_index), height, width)
            columns = tf.repeat(columns, channels, axis=1)
            return tf.matmul(rows, tf.matmul(grid, columns, transpose_b=True))

        def add_scores(points, table):
            first_mask = points[0] // n
            shown = masks(tf.range(first_mask, points[-1] // n + 1))
            mask = tf.gather(shown, points // n - first_mask)
            image_index = points % n
            mask = tf.reshape(mask, (-1, height, width, channels))
            start = tf.cond(  # one baseline shared by all images: broadcast, not gathered
                tf.shape(baseline)[0] == 1,
                lambda: baseline,
                lambda: tf.gather(baseline, image_index),
            )
            point = start + mask * tf.gather(difference, image_index)
            value = objective(classifier.logits(point), tf.gather(targets, image_index))
            return table.write(points[0] // chunk, value)

        def add_masks(mask_index, sums):
            shown = tf.reshape(masks(mask_index)[:, :, ::channels], (-1, height * width))
            weighted = tf.matmul(tf.gather(scores, mask_index), shown, transpose_a=True)
            return sums[0] + weighted, sums[1] + tf.reduce_sum(shown, axis=0)

        total = n * samples
        table = tf.TensorArray(
            tf.float32, size=(total + chunk - 1) // chunk, element_shape=(None,), infer_shape=False
        )
        scores = tf.reshape(over_chunks(total, chunk, add_scores, table).concat(), (-1, n))
        numerator, coverage = over_chunks(
            samples, chunk, add_masks, (tf.zeros((n, height * width)), tf.zeros((height * width,)))
        )
        maps = tf.math.divide_no_nan(numerator, coverage)
        return logits, targets, score, tf.reshape(maps, (-1, height, width, 1))

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
    return compile_with_signature(run, signature)


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

    As in the paper and its reference code, one set of masks serves every image: mask m is
    fixed by (seed, m) alone (:func:`~robustkit.saliency.masks.shared_keys`), so an image's
    map depends on the seed and on the image itself, not on the other images, the batch, the
    chunking or ``first_index``. Masks drawn per image cost about a quarter of a small model's
    forward passes; shared, each is drawn once, and a chunk of B forward passes builds only
    the about B / N + 1 masks it shows.

    Args:
        samples: random masks (per image, all images sharing them).
        grid_size: cells per side of the low-resolution mask grid.
        keep_probability: chance that a cell shows the image.
        baseline: what a masked pixel shows (the paper: "black").
        seed: fixes the masks. first_index: fixes only the "uniform" baseline's noise of
            image i, by first_index + i (see :func:`~robustkit.saliency.smoothgrad`).
        target, objective, internal_batch_size: as for :func:`~robustkit.saliency.gradient`.
    """
    samples = positive_int(samples, "samples")
    grid_size = positive_int(grid_size, "grid_size")
    if not 0 < float(keep_probability) < 1:
        raise InputError(f"keep_probability must be in (0, 1), got {keep_probability!r}.")
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, internal_batch_size)
    reference = make_baseline(classifier, x, baseline, seed=seed, first_index=first_index)
    values = reference.numpy()
    if np.all(values == values[:1]):  # one for every image (black, white, a value, [H, W, C])
        reference = reference[:1]
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
