"""The windows of the Square attack (Andriushchenko et al. 2020): square masks, the L2 attack's
two-lobed pseudo-Gaussian pattern (as the reference ``square.py`` builds it) and the paper's L2
window update. All graph code on [m, H, W, C] batches."""

from __future__ import annotations

import tensorflow as tf

TINY = 1e-12  # keeps divisions by a zero norm finite


def rectangle_bump(
    rows: tf.Tensor, cols: tf.Tensor, height: tf.Tensor, width: tf.Tensor
) -> tf.Tensor:
    """The reference's ``pseudo_gaussian_pert_rectangles(height, width)`` at integer positions
    ``rows``/``cols`` (any equal shapes), unnormalised: concentric rectangles around
    ``(height // 2, width // 2)``, ring k (Chebyshev distance) adding ``1 / (k + 1)**2`` to
    everything inside it, i.e. the value at distance d is ``sum_{k=d+1}^{K} 1 / k**2`` with
    ``K = max(height // 2, width // 2) + 1``."""
    distance = tf.maximum(tf.abs(rows - height // 2), tf.abs(cols - width // 2))
    rings = tf.maximum(height // 2, width // 2) + 1
    k = tf.cast(tf.range(1, rings + 1), tf.float32)
    terms = 1.0 / tf.square(k)
    reach = tf.cast(distance, tf.float32)[..., None] < k  # k > d
    return tf.reduce_sum(tf.where(reach, terms, 0.0), axis=-1)


def pseudo_gaussian_window(side: tf.Tensor | int) -> tf.Tensor:
    """The two-lobed pseudo-Gaussian pattern float32 [side, side] of unit L2 norm (the
    reference's ``meta_pseudo_gaussian_pert`` before its random transpose): the top
    ``side // 2`` rows a positive bump, the other rows a negative one, each of unit norm."""
    side = tf.convert_to_tensor(side, tf.int32)
    split = side // 2
    rows = tf.range(side)[:, None] + tf.zeros([1, side], tf.int32)
    cols = tf.range(side)[None, :] + tf.zeros([side, 1], tf.int32)
    top = rows < split
    bump = tf.where(
        top,
        rectangle_bump(rows, cols, split, side),
        rectangle_bump(rows - split, cols, side - split, side),
    )

    def unit(part: tf.Tensor) -> tf.Tensor:
        return tf.math.divide_no_nan(part, tf.sqrt(tf.reduce_sum(tf.square(part))))

    pattern = unit(tf.where(top, bump, 0.0)) - unit(tf.where(top, 0.0, bump))
    return unit(pattern)


def place_pattern(
    pattern: tf.Tensor,
    side: tf.Tensor,
    top: tf.Tensor,
    left: tf.Tensor,
    transpose: tf.Tensor,
    height: int,
    width: int,
) -> tf.Tensor:
    """``pattern`` [side, side] (or its transpose, per example) placed at per-example corners
    ``top``/``left`` [m] of an [m, height, width, 1] canvas of zeros."""
    rows = tf.range(height)[None, :, None] - top[:, None, None]
    cols = tf.range(width)[None, None, :] - left[:, None, None]
    inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    rows, cols = tf.clip_by_value(rows, 0, side - 1), tf.clip_by_value(cols, 0, side - 1)
    flip = transpose[:, None, None]
    flat = tf.where(flip, cols * side + rows, rows * side + cols)
    values = tf.gather(tf.reshape(pattern, [-1]), flat)
    return tf.where(inside, values, 0.0)[..., None]


def square_mask(
    side: tf.Tensor, top: tf.Tensor, left: tf.Tensor, height: int, width: int
) -> tf.Tensor:
    """bool [m, height, width, 1]: the square of ``side`` pixels at corners ``top``/``left``."""
    rows = tf.range(height)[None, :, None, None] - top[:, None, None, None]
    cols = tf.range(width)[None, None, :, None] - left[:, None, None, None]
    return (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)


def channel_norms(values: tf.Tensor) -> tf.Tensor:
    """L2 norm per example and channel [m, 1, 1, C] of values [m, H, W, C]."""
    return tf.sqrt(tf.reduce_sum(tf.square(values), axis=[1, 2], keepdims=True))


def image_norms(values: tf.Tensor) -> tf.Tensor:
    """L2 norm per example [m, 1, 1, 1] of values [m, H, W, C]."""
    return tf.sqrt(tf.reduce_sum(tf.square(values), axis=[1, 2, 3], keepdims=True))


def l2_window_update(
    delta: tf.Tensor, first: tf.Tensor, union: tf.Tensor, bump: tf.Tensor, eps: tf.Tensor
) -> tf.Tensor:
    """The paper's L2 step on perturbations delta [m, H, W, C] of norm <= eps: the new
    perturbation, of L2 norm eps.

    ``first`` and ``union`` are bool [m, H, W, 1] masks of window 1 and of windows 1 and 2;
    ``bump`` [m, H, W, C] is the new pattern in window 1 (unit norm per channel, zero outside).
    Per channel c, window 1 becomes ``bump + old_c / ||old_c||`` (old_c: its current content)
    rescaled to norm ``sqrt(max(eps² - ||delta||², 0) / C + ||delta_c on windows 1 and 2||²)``;
    window 2 outside window 1 becomes zero; the rest is kept. The mass moved equals the mass
    removed plus the unused budget, so the norm becomes eps; the whole perturbation is then
    rescaled to eps exactly (as the reference does, which absorbs round-off)."""
    channels = delta.shape[-1]
    old = tf.where(first, delta, 0.0)
    new = bump + old / (channel_norms(old) + 1e-10)
    unused = tf.maximum(tf.square(eps) - tf.square(image_norms(delta)), 0.0)
    mass = tf.square(channel_norms(tf.where(union, delta, 0.0)))
    new = new / (channel_norms(new) + TINY) * tf.sqrt(unused / channels + mass)
    delta = tf.where(first, new, tf.where(union, 0.0, delta))
    return delta / (image_norms(delta) + TINY) * eps
