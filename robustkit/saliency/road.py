"""ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"): remove and debias.

Pixels are removed in saliency order, most relevant first (MoRF) or least relevant first (LeRF),
and filled by noisy linear imputation instead of a constant, so the removal itself leaks no
information about which pixels were removed (the "class information leakage" of constant
baselines): each removed pixel takes the weighted mean of its 8 neighbours (direct 1/6,
diagonal 1/12), removed neighbours being unknowns of the same sparse linear system, plus a little
Gaussian noise. The system is solved in the graph by conjugate gradients, so the whole curve set
is one compiled loop over images × fractions × orders, ``internal_batch_size`` points at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.checks import checked_maps, salience_ranks
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    SCALAR_FLOAT,
    SCALAR_INT,
    SEED_SPECS,
    compiled,
    image_spec,
    sum_over_points,
)
from robustkit.saliency.masks import point_keys
from robustkit.tracing import compile_with_signature

NEIGHBOUR_WEIGHTS = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12.0
DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CG_TOLERANCE = 1e-6  # relative residual at which a row's solve stops


def _neighbour_sum(values: tf.Tensor) -> tf.Tensor:
    """sum_n w_n v_n over the 8 neighbours of each pixel of values [B, H, W, C], pixels outside
    the image counting as 0."""
    channels = int(values.shape[-1])
    kernel = np.tile(NEIGHBOUR_WEIGHTS[:, :, None, None], (1, 1, channels, 1))
    return tf.nn.depthwise_conv2d(values, tf.constant(kernel, values.dtype), (1, 1, 1, 1), "SAME")


def noisy_linear_imputation(
    x: tf.Tensor, removed: tf.Tensor, noise: tf.Tensor | float, keys: tf.Tensor
) -> tf.Tensor:
    """x [B, H, W, C] with the pixels ``removed`` [B, H, W, 1] (bool) imputed.

    The imputed values v solve, for every removed pixel p and channel,
    ``v_p * sum_{n in image} w_n = sum_{n kept} w_n x_n + sum_{n removed} w_n v_n`` (w: the
    neighbour weights), by conjugate gradients per row until the residual is
    :data:`CG_TOLERANCE` of the right-hand side (or H * W iterations); then normal noise of
    standard deviation ``noise`` (pixel units) drawn from each row's key [B, 2] is added to the
    removed pixels. Kept pixels are returned unchanged.
    """
    mask = tf.cast(removed, tf.float32)
    kept = 1.0 - mask
    degree = _neighbour_sum(tf.ones_like(x[:1]))  # the weights of the in-image neighbours

    def operator(v: tf.Tensor) -> tf.Tensor:
        return mask * (degree * v - _neighbour_sum(v))

    def dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(a * b, axis=(1, 2, 3), keepdims=True)

    rhs = mask * _neighbour_sum(x * kept)
    target = CG_TOLERANCE**2 * dot(rhs, rhs)

    def body(i, v, residual, direction, squared):
        active = squared > target
        product = operator(direction)
        step = tf.where(active, squared / tf.where(active, dot(direction, product), 1.0), 0.0)
        v = v + step * direction
        residual = residual - step * product
        new_squared = dot(residual, residual)
        ratio = new_squared / tf.where(active, squared, 1.0)
        direction = tf.where(active, residual + ratio * direction, direction)
        return i + 1, v, residual, direction, tf.where(active, new_squared, squared)

    limit = int(np.prod(x.shape[1:3]))
    _, imputed, *_ = tf.while_loop(
        lambda i, v, r, d, squared: (i < limit) & tf.reduce_any(squared > target),
        body,
        (tf.constant(0), tf.zeros_like(x), rhs, rhs, dot(rhs, rhs)),
    )
    jitter = noise * seeding.normal(keys, tf.shape(x)[1:])
    return kept * x + mask * (imputed + jitter)


@dataclass
class RoadCurves:
    """ROAD curves of N images over S removal fractions.

    Attributes:
        fractions: float [S] share of pixels removed and imputed.
        morf, lerf: float [N, S] softmax probability of the target after removing the most
            (MoRF) or least (LeRF) relevant pixels. A faithful map drops MoRF fast and keeps
            LeRF high.
        morf_correct, lerf_correct: bool [N, S] whether the model still predicts the target.
        target: int [N] the explained classes; options: how the curves were made.
    """

    fractions: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    morf_correct: np.ndarray
    lerf_correct: np.ndarray
    target: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def morf_accuracy(self) -> np.ndarray:
        """float [S] share of images still predicted as their target after MoRF removal."""
        return self.morf_correct.mean(axis=0)

    @property
    def lerf_accuracy(self) -> np.ndarray:
        """float [S] the same after LeRF removal."""
        return self.lerf_correct.mean(axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            name: value.tolist() if isinstance(value, np.ndarray) else value
            for name, value in vars(self).items()
        }


def _road_function(classifier: Classifier) -> Any:
    """Compiled ``(x, ranks, counts, targets, noise, seed, first_index, chunk)`` ->
    (probabilities, correct) [N, 2S]: columns 0..S-1 MoRF, S..2S-1 LeRF."""
    height, width, _ = classifier.input_shape
    pixels = height * width

    def run(x, ranks, counts, targets, noise, seed, first_index, chunk):
        n = tf.shape(x)[0]
        points = 2 * tf.size(counts)

        def contributions(image_index, point_index):
            count = tf.gather(counts, point_index % tf.size(counts))[:, None]
            rank = tf.gather(ranks, image_index)
            most_relevant_first = (point_index < tf.size(counts))[:, None]
            removed = tf.where(most_relevant_first, rank < count, rank >= pixels - count)
            keys = point_keys(seed, first_index, image_index, point_index)
            image = noisy_linear_imputation(
                tf.gather(x, image_index),
                tf.reshape(removed, (-1, height, width, 1)),
                noise,
                keys,
            )
            logits = classifier.logits(image)
            target = tf.gather(targets, image_index)
            probability = tf.gather(tf.nn.softmax(logits), target, batch_dims=1)
            correct = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == target, tf.float32)
            column = tf.one_hot(point_index, points)
            return probability[:, None] * column, correct[:, None] * column

        zeros = tf.zeros(tf.stack([n, points]))
        return sum_over_points(n, points, chunk, contributions, (zeros, zeros))

    signature = [
        image_spec(classifier),
        tf.TensorSpec((None, pixels), tf.int32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None,), tf.int32),
        SCALAR_FLOAT,
        *SEED_SPECS,
        SCALAR_INT,
    ]
    return compile_with_signature(run, signature)


def road(
    classifier: Classifier,
    x: Any,
    attribution: Attribution | Any,
    target: Any = None,
    *,
    fractions: Any = DEFAULT_FRACTIONS,
    noise: float = 0.01,
    reduction: str = "sum",
    seed: int = 0,
    first_index: int = 0,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> RoadCurves:
    """ROAD MoRF and LeRF curves (Rong et al. 2022) with noisy linear imputation.

    For each fraction p, the round(p * H * W) pixels (all channels at once) ranked first (MoRF)
    or last (LeRF) by the channel-reduced map (ties in reading order) are imputed by
    :func:`noisy_linear_imputation`, and the target's probability is recorded.

    Args:
        x: the images the maps explain [N, H, W, C].
        attribution: an :class:`Attribution` or maps [N, H, W, C'].
        target: the classes tracked; default the attribution's (plain maps: the predicted).
        fractions: shares of pixels removed, each in [0, 1).
        noise: standard deviation of the imputation noise as a fraction of the input range
            (the paper: 0.01); imputed pixels are not clipped to the bounds.
        reduction: channel reduction that ranks the pixels (see
            :func:`~robustkit.saliency.render.reduce_channels`).
        seed, first_index: the noise of image i is fixed by the seed and first_index + i.
        internal_batch_size: imputations and forward passes per chunk.
    """
    values = np.asarray(fractions, np.float64).ravel()
    if values.size == 0 or np.any(values < 0) or np.any(values >= 1):
        raise InputError(f"fractions must be shares in [0, 1), got {fractions!r}.")
    if not float(noise) >= 0:
        raise InputError(f"noise must be a fraction of the input range >= 0, got {noise!r}.")
    classifier, x, maps, targets, chunk = checked_maps(
        classifier, x, attribution, target, internal_batch_size
    )
    height, width, _ = classifier.input_shape
    counts = np.rint(values * height * width).astype(np.int32)
    low, high = classifier.bounds
    function = compiled(classifier, "road", lambda: _road_function(classifier))
    probabilities, correct = (
        r.numpy()
        for r in function(
            x,
            tf.constant(salience_ranks(maps, reduction)),
            tf.constant(counts),
            targets,
            tf.constant(float(noise) * (high - low), tf.float32),
            tf.constant(int(seed), tf.int32),
            tf.constant(int(first_index), tf.int64),
            chunk,
        )
    )
    steps = len(values)
    return RoadCurves(
        fractions=values,
        morf=probabilities[:, :steps],
        lerf=probabilities[:, steps:],
        morf_correct=correct[:, :steps] > 0.5,
        lerf_correct=correct[:, steps:] > 0.5,
        target=targets.numpy().astype(np.int64),
        options={
            "noise": float(noise),
            "reduction": reduction,
            "seed": int(seed),
            "first_index": int(first_index),
            "internal_batch_size": int(chunk),
        },
    )
