"""Features, masks, subsets and coalitions of the perturbation methods and metrics.

Every random draw is keyed by (seed, first_index + image index, point index) through
:mod:`robustkit.seeding`, so what a point (one subset or coalition of one image) draws does not
depend on the batch or on the chunk it is computed in; RISE's masks, shared by all images as in
the paper, are keyed by (seed, mask index) alone. The draws run in the graph, and also
eagerly, so tests and users can look at the very masks a method used.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError, positive_int


def point_keys(
    seed: tf.Tensor, first_index: tf.Tensor, image_index: tf.Tensor, point_index: tf.Tensor
) -> tf.Tensor:
    """Keys int32 [B, 2] of points ``point_index`` [B] of images ``first_index + image_index``
    [B] under an integer ``seed``."""
    images = tf.cast(first_index, tf.int64) + tf.cast(image_index, tf.int64)
    seed_words = tf.stack([tf.cast(seed, tf.int32), tf.constant(0, tf.int32)])
    return seeding.fold_in(seeding.example_keys(seed_words, images), point_index)


def shared_keys(seed: tf.Tensor, point_index: tf.Tensor) -> tf.Tensor:
    """Keys int32 [B, 2] of draws shared by every image (RISE's masks): points ``point_index``
    [B] under an integer ``seed``, in a stream apart from every image's :func:`point_keys`."""
    seed_words = tf.stack([tf.cast(seed, tf.int32), tf.constant(1, tf.int32)])
    return seeding.example_keys(seed_words, point_index)


def patch_shape(patch_size: Any, height: int, width: int) -> tuple[int, int]:
    """A patch size in pixels (an int or (rows, columns)) checked against the image size;
    None gives an 8 x 8 grid of patches, ``ceil(side / 8)`` pixels each."""
    if patch_size is None:
        return math.ceil(height / 8), math.ceil(width / 8)
    rows, columns = (patch_size, patch_size) if np.ndim(patch_size) == 0 else patch_size
    rows, columns = positive_int(rows, "patch_size"), positive_int(columns, "patch_size")
    if rows > height or columns > width:
        raise InputError(
            f"patch_size {(rows, columns)} is larger than the images ({height} x {width})."
        )
    return rows, columns


def grid_labels(height: int, width: int, patch: tuple[int, int]) -> np.ndarray:
    """int32 [H, W]: the patch each pixel lies in, for patches of ``patch`` = (rows, columns)
    pixels tiling the image from the top left (the last row and column of patches may be
    cut by the border), numbered in reading order."""
    rows = np.arange(height) // patch[0]
    columns = np.arange(width) // patch[1]
    return (rows[:, None] * math.ceil(width / patch[1]) + columns[None, :]).astype(np.int32)


def feature_labels(
    n: int, height: int, width: int, segments: Any, patch_size: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The features of n images: labels int32 [n, H * W] (each pixel's feature, numbered
    0 .. count - 1 per image) and counts int32 [n].

    ``segments`` None gives the patch grid of ``patch_size`` (see :func:`patch_shape`);
    otherwise it is an integer array [H, W] (shared) or [n, H, W] of the images' own regions,
    for example superpixels from ``skimage.segmentation.slic``, in any numbering.
    """
    if segments is None:
        grid = grid_labels(height, width, patch_shape(patch_size, height, width))
        segments = np.broadcast_to(grid, (n, height, width))
    values = np.asarray(segments)
    if values.shape == (height, width):
        values = np.broadcast_to(values, (n, height, width))
    if values.shape != (n, height, width) or not np.issubdtype(values.dtype, np.integer):
        raise InputError(
            f"segments must be integers of shape ({height}, {width}) or ({n}, {height}, "
            f"{width}), got {values.dtype} {values.shape}."
        )
    labels = np.empty((n, height * width), np.int32)
    counts = np.empty(n, np.int32)
    for i, image_segments in enumerate(values.reshape(n, -1)):
        kinds, labels[i] = np.unique(image_segments, return_inverse=True)
        counts[i] = len(kinds)
    return labels, counts


def bilinear_weights(cells: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """float32 [size, cells]: row r holds the weights that ``tf.image.resize(..., "bilinear")``
    gives the ``cells`` input samples in output sample r along one axis (half-pixel centres)."""
    basis = tf.eye(cells)[:, :, None, None]  # ``cells`` one-hot columns [cells, 1, 1]
    resized = tf.image.resize(basis, tf.stack([size, 1]), method="bilinear")
    return tf.transpose(resized[:, :, 0, 0])


def rise_draws(
    keys: tf.Tensor, grid_size: tf.Tensor, keep_probability: tf.Tensor, height: int, width: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """What the RISE masks of keys [B, 2] draw (see :func:`rise_masks`): the kept cells
    float32 [B, g, g] (1 kept, 0 masked; g = grid_size) and the shifts int32 [B, 2] in
    [0, cell) of the crop, (rows, columns)."""
    cell_rows = (height + grid_size - 1) // grid_size
    cell_columns = (width + grid_size - 1) // grid_size
    grid = seeding.uniform(keys, tf.stack([grid_size, grid_size])) < keep_probability
    row_shift = seeding.integers(seeding.fold_in(keys, 1), cell_rows)
    column_shift = seeding.integers(seeding.fold_in(keys, 2), cell_columns)
    return tf.cast(grid, tf.float32), tf.stack([row_shift, column_shift], axis=1)


def rise_mask_factors(
    grid: tf.Tensor, shifts: tf.Tensor, height: int, width: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """The RISE masks of draws ``grid`` [B, g, g] and ``shifts`` [B, 2] (see
    :func:`rise_draws`) as factors: rows [B, H, g] and columns [B, W, g] with
    mask = rows @ grid @ columns^T.

    Bilinear upsampling is separable, so the upsampled, shifted and cropped grid is the binary
    grid times the interpolation weights of the kept rows on the left and of the kept columns
    on the right: g x g cells and two small matrices per mask instead of an upsampled image.
    """
    grid_size = tf.shape(grid)[1]
    cell_rows = (height + grid_size - 1) // grid_size
    cell_columns = (width + grid_size - 1) // grid_size
    row_weights = bilinear_weights(grid_size, (grid_size + 1) * cell_rows)
    column_weights = bilinear_weights(grid_size, (grid_size + 1) * cell_columns)
    rows = tf.gather(row_weights, shifts[:, :1] + tf.range(height)[None, :])
    columns = tf.gather(column_weights, shifts[:, 1:] + tf.range(width)[None, :])
    return rows, columns


def rise_masks(
    keys: tf.Tensor, grid_size: tf.Tensor, keep_probability: tf.Tensor, height: int, width: int
) -> tf.Tensor:
    """RISE masks float32 [B, H, W, 1] in [0, 1] (Petsiuk et al. 2018), one per key [B, 2].

    Each cell of a ``grid_size`` x ``grid_size`` grid is kept with ``keep_probability``; the
    binary grid is upsampled bilinearly to (grid_size + 1) * cell pixels, cell =
    ceil(side / grid_size), and cropped to H x W at a random shift in [0, cell) per axis
    (computed from :func:`rise_mask_factors`).
    """
    grid, shifts = rise_draws(keys, grid_size, keep_probability, height, width)
    rows, columns = rise_mask_factors(grid, shifts, height, width)
    return tf.matmul(rows, tf.matmul(grid, columns, transpose_b=True))[..., None]


def present_features(counts: tf.Tensor, max_count: tf.Tensor) -> tf.Tensor:
    """bool [B, max_count]: which of the ``max_count`` feature slots are among each key's first
    ``counts`` [B] features (images with fewer features than the widest leave the rest off)."""
    return tf.range(max_count)[None, :] < counts[:, None]


def random_subsets(
    keys: tf.Tensor, counts: tf.Tensor, sizes: tf.Tensor, max_count: tf.Tensor
) -> tf.Tensor:
    """bool [B, max_count]: for each key, exactly ``sizes`` [B] of its first ``counts`` [B]
    features, chosen uniformly without replacement."""
    valid = present_features(counts, max_count)
    draws = tf.where(valid, seeding.uniform(keys, tf.reshape(max_count, (1,))), 2.0)
    ranks = tf.argsort(tf.argsort(draws, axis=1, stable=True), axis=1, stable=True)
    return ranks < sizes[:, None]


def shapley_coalitions(
    seed: tf.Tensor,
    first_index: tf.Tensor,
    image_index: tf.Tensor,
    sample_index: tf.Tensor,
    counts: tf.Tensor,
    max_count: tf.Tensor,
) -> tf.Tensor:
    """KernelSHAP coalitions bool [B, max_count] over each image's ``counts`` [B] (>= 2)
    features.

    A coalition's size k in 1 .. F - 1 is drawn with odds 1 / (k (F - k)) (the Shapley kernel
    summed over the coalitions of that size), its members uniformly; samples come in
    complementary pairs (sample 2j + 1 is the complement of sample 2j), which halves the
    variance of the estimate.
    """
    keys = point_keys(seed, first_index, image_index, sample_index // 2)
    sizes = tf.range(1, max_count)[None, :]
    remaining = counts[:, None] - sizes
    odds = tf.where(remaining > 0, 1.0 / tf.cast(sizes * tf.maximum(remaining, 1), tf.float32), 0.0)
    cumulative = tf.cumsum(odds, axis=1) / tf.reduce_sum(odds, axis=1, keepdims=True)
    draw = seeding.uniform(seeding.fold_in(keys, 1), [1])
    chosen = tf.searchsorted(cumulative, draw, side="right")[:, 0]
    size = tf.minimum(chosen, counts - 2) + 1
    subset = random_subsets(seeding.fold_in(keys, 2), counts, size, max_count)
    valid = present_features(counts, max_count)
    complement = (sample_index % 2 == 1)[:, None]
    return tf.where(complement, tf.logical_and(valid, tf.logical_not(subset)), subset)


def lime_coalitions(
    seed: tf.Tensor,
    first_index: tf.Tensor,
    image_index: tf.Tensor,
    sample_index: tf.Tensor,
    counts: tf.Tensor,
    max_count: tf.Tensor,
) -> tf.Tensor:
    """LIME coalitions bool [B, max_count]: each of an image's ``counts`` [B] features is on
    with probability 1/2, independently (as ``lime_image`` samples)."""
    keys = point_keys(seed, first_index, image_index, sample_index)
    valid = present_features(counts, max_count)
    return tf.logical_and(valid, seeding.uniform(keys, tf.reshape(max_count, (1,))) < 0.5)
