"""Reference images: IG baselines and the substrates of deletion/insertion curves."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency.masks import point_keys

BASELINE_KINDS = ("black", "white", "uniform", "blur")
BASELINE_POINT = -1  # the key stream of a "uniform" baseline (samples of an image use 0, 1, ...)
DEFAULT_BLUR_SIGMA = 5.0  # pixels


def _gaussian_taps(sigma: float, radius: int) -> tf.Tensor:
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    return tf.constant(taps / taps.sum(), tf.float32)


def gaussian_blur(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Each channel of x [N, H, W, C] blurred with a Gaussian of ``sigma`` pixels.

    The kernel reaches 3 sigma (at most the image size); borders are mirrored, so a constant
    image stays constant.
    """
    if not sigma > 0:
        raise InputError(f"blur_sigma must be > 0 pixels, got {sigma!r}.")
    height, width, channels = (int(d) for d in x.shape[1:])
    reach = math.ceil(3 * sigma)
    for axis, size in ((1, height), (2, width)):
        radius = min(reach, size - 1)
        if radius == 0:
            continue
        taps = _gaussian_taps(sigma, radius)
        kernel_shape = (-1, 1, 1, 1) if axis == 1 else (1, -1, 1, 1)
        kernel = tf.tile(tf.reshape(taps, kernel_shape), (1, 1, channels, 1))
        padding = [[0, 0], [0, 0], [0, 0], [0, 0]]
        padding[axis] = [radius, radius]
        x = tf.nn.depthwise_conv2d(
            tf.pad(x, padding, mode="SYMMETRIC"), kernel, (1, 1, 1, 1), "VALID"
        )
    return x


def baseline_name(baseline: Any) -> str | float:
    """A JSON-able name of a baseline: its kind, its number, or "array"."""
    if isinstance(baseline, str):
        return baseline
    return float(baseline) if np.ndim(baseline) == 0 else "array"


def make_baseline(
    classifier: Classifier,
    x: tf.Tensor,
    baseline: Any,
    *,
    seed: int = 0,
    first_index: int = 0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> tf.Tensor:
    """The reference image for each image of x [N, H, W, C], as float32 [N, H, W, C].

    ``baseline`` is "black" (the low bound), "white" (the high bound), "uniform" (noise drawn
    uniformly in the bounds; image i's noise is fixed by ``seed`` and ``first_index`` + i),
    "blur" (the image blurred with a Gaussian of ``blur_sigma`` pixels), a number (every pixel
    that value, e.g. 0.5 for mid-grey), or an array in the bounds of shape [H, W, C] (shared) or
    [N, H, W, C].
    """
    low, high = classifier.bounds
    if isinstance(baseline, str):
        if baseline == "black":
            return tf.fill(tf.shape(x), low)
        if baseline == "white":
            return tf.fill(tf.shape(x), high)
        if baseline == "uniform":
            n = int(x.shape[0])
            if n == 0:
                return tf.zeros_like(x)
            images = tf.range(n)
            keys = point_keys(int(seed), int(first_index), images, tf.fill([n], BASELINE_POINT))
            unit = seeding.uniform(keys, classifier.input_shape)
            return low + (high - low) * unit
        if baseline == "blur":
            return gaussian_blur(x, float(blur_sigma))
        raise InputError(
            f"Unknown baseline {baseline!r}; use one of {BASELINE_KINDS}, a number or an "
            "image array."
        )
    values = np.asarray(baseline, dtype=np.float32)
    if values.ndim == 0:
        values = np.full(tuple(x.shape), values, np.float32)
    if values.shape == tuple(x.shape[1:]):
        values = np.broadcast_to(values, tuple(x.shape))
    if values.shape != tuple(x.shape):
        raise InputError(
            f"An array baseline must have shape {tuple(x.shape[1:])} or {tuple(x.shape)}, "
            f"got {values.shape}."
        )
    return classifier.validate_images(values, name="baseline")
