"""Quality metrics of saliency maps, each on a batch of images.

* Faithfulness: :func:`mu_fidelity` (Bhatt et al. 2020); :func:`~robustkit.saliency.road.road`
  (Rong et al. 2022); the deletion/insertion curves are
  :func:`~robustkit.saliency.checks.deletion_insertion` (Petsiuk et al. 2018).
* Robustness: :func:`stability`, average and max sensitivity (Yeh et al. 2019).
* Complexity: :func:`sparseness` (Gini index, Chalasani et al. 2020) and :func:`complexity`
  (entropy, Bhatt et al. 2020).
* Sanity: :func:`random_logit` (Sixt et al. 2020); the cascading model-parameter randomization
  test is :func:`~robustkit.saliency.checks.randomization_check` (Adebayo et al. 2018).

Model-based metrics run compiled, in chunks (memory flat as samples grow), and draw their
random subsets, noise and classes per (seed, first_index + image index, sample index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError, positive_int
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import baseline_name, make_baseline
from robustkit.saliency.checks import checked_maps, spearman
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    SCALAR_INT,
    SEED_SPECS,
    check_classifier,
    common_options,
    compiled,
    explained,
    get_objective,
    image_spec,
    sum_over_points,
)
from robustkit.saliency.masks import feature_labels, patch_shape, point_keys, random_subsets
from robustkit.saliency.registry import get_method
from robustkit.saliency.render import reduce_channels
from robustkit.tracing import compile_with_signature


@dataclass
class MetricResult:
    """Per-image values of one metric on N images.

    Attributes:
        metric: the metric's name; values: float [N] (NaN where undefined); target: int [N] the
            classes the maps explain; options: how it was computed.
        extra: further per-image arrays [N] (e.g. the random classes of the random-logit test).
    """

    metric: str
    values: np.ndarray
    target: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """The mean over the images, NaNs left out (NaN when every value is NaN)."""
        finite = self.values[np.isfinite(self.values)]
        return float(finite.mean()) if finite.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN as None)."""
        as_list = lambda a: [v if np.isfinite(v) else None for v in np.asarray(a).tolist()]  # noqa: E731
        return {
            "metric": self.metric,
            "mean": None if np.isnan(self.mean) else self.mean,
            "values": as_list(self.values),
            "target": self.target.tolist(),
            "options": self.options,
            **{name: as_list(value) for name, value in self.extra.items()},
        }


def _fidelity_function(classifier: Classifier, objective: LossFunction) -> Any:
    """Compiled ``(x, baseline, targets, pixel_maps, labels, counts, sizes, samples, seed,
    first_index, chunk)`` -> moments [N, 5] float64 over the subsets S: sums of a, d, a², d²,
    a d with a = the map summed over S, d = f(x) - f(x with S at the baseline)."""
    height, width, _ = classifier.input_shape

    def run(x, baseline, targets, pixel_maps, labels, counts, sizes, samples, seed, first, chunk):
        _, targets, score = explained(classifier, objective, x, targets, chunk)
        n = tf.shape(x)[0]

        def contributions(image_index, sample_index):
            keys = point_keys(seed, first, image_index, sample_index)
            image_counts = tf.gather(counts, image_index)
            subset = random_subsets(
                keys, image_counts, tf.gather(sizes, image_index), tf.reduce_max(counts)
            )
            removed = tf.gather(subset, tf.gather(labels, image_index), batch_dims=1)
            image = tf.gather(x, image_index)
            point = tf.where(
                tf.reshape(removed, (-1, height, width, 1)), tf.gather(baseline, image_index), image
            )
            value = objective(classifier.logits(point), tf.gather(targets, image_index))
            drop = tf.cast(tf.gather(score, image_index) - value, tf.float64)
            share = tf.reduce_sum(
                tf.gather(pixel_maps, image_index) * tf.cast(removed, tf.float64), axis=1
            )
            return (tf.stack([share, drop, share**2, drop**2, share * drop], axis=1),)

        (moments,) = sum_over_points(
            n, samples, chunk, contributions, (tf.zeros(tf.stack([n, 5]), tf.float64),)
        )
        return moments

    spec = image_spec(classifier)
    vector = tf.TensorSpec((None,), tf.int32)
    signature = [
        spec,
        spec,
        vector,
        tf.TensorSpec((None, height * width), tf.float64),
        tf.TensorSpec((None, height * width), tf.int32),
        vector,
        vector,
        SCALAR_INT,
        *SEED_SPECS,
        SCALAR_INT,
    ]
    return compile_with_signature(run, signature)


def _variance(mean_square: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """E[v²] - E[v]², set to 0 where it is within float rounding of 0 (a constant v)."""
    variance = mean_square - mean**2
    return np.where(variance > 1e-12 * mean_square, variance, 0.0)


def mu_fidelity(
    classifier: Classifier,
    x: Any,
    attribution: Attribution | Any,
    target: Any = None,
    *,
    samples: int = 128,
    subset_fraction: float = 0.2,
    patch_size: int | tuple[int, int] | None = None,
    baseline: Any = "black",
    seed: int = 0,
    first_index: int = 0,
    objective: str | LossFunction = "logit",
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> MetricResult:
    """MuFidelity (Bhatt et al. 2020, def. 3): the Pearson correlation, over random subsets S
    of fixed size, between sum_{i in S} map_i and f(x) - f(x with S set to the baseline).

    Features are the patches of a grid (patch_size=1: single pixels, the paper's definition;
    default an 8 x 8 grid, advised for larger images); each subset holds
    max(1, round(subset_fraction * features)) of them, all channels; the map is summed over
    its channels and over the subset's pixels. 1 for a map that adds up like the model.

    Args:
        attribution: an :class:`Attribution` or maps [N, H, W, C'].
        samples: subsets per image.
        subset_fraction: share of the features in each subset.
        baseline: what the removed pixels show (as the IG baselines, or a number).
        seed, first_index: image i's subsets are fixed by the seed and first_index + i.
        target, objective, internal_batch_size: as for deletion_insertion and the methods.

    Returns:
        A :class:`MetricResult` with values in [-1, 1] (NaN where the map or the drops are
        constant over the subsets).
    """
    samples = positive_int(samples, "samples")
    if not 0 < float(subset_fraction) < 1:
        raise InputError(f"subset_fraction must be in (0, 1), got {subset_fraction!r}.")
    classifier, x, maps, targets, chunk = checked_maps(
        classifier, x, attribution, target, internal_batch_size
    )
    n, (height, width, _) = int(x.shape[0]), classifier.input_shape
    labels, counts = feature_labels(n, height, width, None, patch_size)
    sizes = np.maximum(1, np.rint(float(subset_fraction) * counts)).astype(np.int32)
    reference = make_baseline(classifier, x, baseline, seed=seed, first_index=first_index)
    function = compiled(
        classifier,
        ("mu_fidelity", objective),
        lambda: _fidelity_function(classifier, get_objective(objective)),
    )
    moments = function(
        x,
        reference,
        targets,
        tf.constant(np.asarray(maps, np.float64).sum(-1).reshape(n, -1)),
        tf.constant(labels),
        tf.constant(counts),
        tf.constant(sizes),
        tf.constant(samples),
        tf.constant(int(seed), tf.int32),
        tf.constant(int(first_index), tf.int64),
        chunk,
    ).numpy()
    share, drop, share_squares, drop_squares, products = (moments / samples).T
    variances = [_variance(share_squares, share), _variance(drop_squares, drop)]
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (products - share * drop) / np.sqrt(variances[0] * variances[1])
    values[(variances[0] == 0) | (variances[1] == 0)] = np.nan
    options = {
        "samples": samples,
        "subset_fraction": float(subset_fraction),
        "patch_size": list(patch_shape(patch_size, height, width)),
        "baseline": baseline_name(baseline),
        "seed": int(seed),
        "first_index": int(first_index),
        **common_options(objective, chunk),
    }
    return MetricResult("mu_fidelity", values, targets.numpy().astype(np.int64), options)


def _stability_noise(
    keys: tf.Tensor, shape: tuple[int, ...], radius: float, classifier: Classifier
) -> tf.Tensor:
    """Uniform noise [N, *shape] in [-radius, radius] of the input range, per key [N, 2]."""
    low, high = classifier.bounds
    return seeding.uniform(keys, list(shape), -1.0, 1.0) * (radius * (high - low))


def stability(
    classifier: Classifier,
    x: Any,
    method: str | Any = "gradient",
    target: Any = None,
    *,
    radius: float = 0.05,
    samples: int = 10,
    norm: str = "l2",
    seed: int = 0,
    first_index: int = 0,
    **method_options: Any,
) -> MetricResult:
    """Average and max sensitivity (Yeh et al. 2019): how far the map moves, ||map(y) -
    map(x)||, for y drawn uniformly in the L-inf ball of ``radius`` around x (clipped to the
    bounds), estimated on ``samples`` draws per image.

    The explained classes stay those of the original maps. Memory is flat in ``samples``: each
    draw is one compiled call of the method on the batch, folded into running sums.

    Args:
        method: a method name (see :data:`~robustkit.saliency.METHODS`) or callable.
        radius: half-width of the ball as a fraction of the input range.
        samples: perturbed copies per image.
        norm: "l2" (Frobenius norm of the map difference) or "linf" (its largest entry).
        seed, first_index: image i's perturbations are fixed by the seed and first_index + i.
        method_options: passed to the method (a seeded method keeps its own seed).

    Returns:
        A :class:`MetricResult` whose values are the average sensitivity [N] (map units), with
        the max sensitivity in ``extra["max_sensitivity"]``.
    """
    attribute = get_method(method)
    classifier = check_classifier(classifier)
    samples = positive_int(samples, "samples")
    if not float(radius) > 0:
        raise InputError(f"radius must be a fraction of the input range > 0, got {radius!r}.")
    if norm not in ("l2", "linf"):
        raise InputError(f"Unknown norm {norm!r}; use 'l2' or 'linf'.")
    original = attribute(classifier, x, target, **method_options)
    x = classifier.validate_images(x)
    low, high = classifier.bounds
    images = tf.range(int(x.shape[0]), dtype=tf.int64) + int(first_index)
    image_keys = seeding.example_keys(tf.constant([int(seed), 0], tf.int32), images)
    total = np.zeros(len(original))
    largest = np.zeros(len(original))
    for sample in range(samples):
        noise = _stability_noise(
            seeding.fold_in(image_keys, sample), classifier.input_shape, radius, classifier
        )
        perturbed = tf.clip_by_value(x + noise, low, high)
        moved = attribute(classifier, perturbed, original.target, **method_options).maps
        difference = (moved.astype(np.float64) - original.maps).reshape(len(original), -1)
        distance = (
            np.linalg.norm(difference, axis=1) if norm == "l2" else np.abs(difference).max(axis=1)
        )
        total += distance
        largest = np.maximum(largest, distance)
    options = {
        "method": original.method,
        "radius": float(radius),
        "samples": samples,
        "norm": norm,
        "seed": int(seed),
        "first_index": int(first_index),
    }
    return MetricResult(
        "stability",
        total / samples,
        original.target,
        options,
        extra={"max_sensitivity": largest},
    )


def _magnitudes(maps: Attribution | Any) -> np.ndarray:
    """|maps| flattened per image, float64 [N, D]."""
    values = maps.maps if isinstance(maps, Attribution) else np.asarray(maps)
    if values.ndim < 2:
        raise InputError(f"maps must be [N, ...] with one map per image, got {values.shape}.")
    return np.abs(values.astype(np.float64).reshape(len(values), -1))


def sparseness(maps: Attribution | Any) -> np.ndarray:
    """Gini index of each map's magnitudes (Chalasani et al. 2020), float64 [N].

    ``G = sum_k (2k - D - 1) a_(k) / (D sum_k a_k)`` with a_(1) <= ... <= a_(D) the sorted
    |values| of the D entries of a map: 0 when all are equal, (D - 1) / D when one holds
    everything; NaN for an all-zero map. Higher is sparser.
    """
    magnitudes = np.sort(_magnitudes(maps), axis=1)
    size = magnitudes.shape[1]
    ranks = 2 * np.arange(1, size + 1) - size - 1
    totals = magnitudes.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, magnitudes @ ranks / (size * totals), np.nan)


def complexity(maps: Attribution | Any) -> np.ndarray:
    """Entropy of each map's fractional contributions (Bhatt et al. 2020), nats, float64 [N].

    ``-sum_i p_i ln p_i`` with p_i = |a_i| / sum_j |a_j| over the map's entries (0 ln 0 = 0):
    0 when one entry holds everything, ln D when all are equal; NaN for an all-zero map.
    Lower is simpler.
    """
    magnitudes = _magnitudes(maps)
    totals = magnitudes.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = magnitudes / totals
        terms = np.where(shares > 0, shares * np.log(np.where(shares > 0, shares, 1)), 0.0)
    return np.where(totals[:, 0] > 0, -terms.sum(axis=1), np.nan)


def random_logit(
    classifier: Classifier,
    x: Any,
    method: str | Any = "gradient",
    target: Any = None,
    *,
    absolute: bool = True,
    seed: int = 0,
    first_index: int = 0,
    **method_options: Any,
) -> MetricResult:
    """Random-logit test (Sixt et al. 2020): does the map change with the explained class?

    Each image is explained for its target and for a class drawn uniformly among the other
    K - 1 (keyed by the seed and first_index + i); the values are the Spearman rank
    correlations of the two channel-reduced maps (magnitudes when ``absolute``), as in
    :func:`~robustkit.saliency.checks.randomization_check`, where Sixt et al. used SSIM. A
    class-sensitive method gives low correlations; NaN where a map is constant.

    Returns:
        A :class:`MetricResult` with the correlations [N] and the random classes in
        ``extra["random_target"]``.
    """
    attribute = get_method(method)
    if check_classifier(classifier).num_classes < 2:
        raise InputError("The random-logit test needs a model with at least 2 classes.")
    original = attribute(classifier, x, target, **method_options)
    images = tf.range(len(original), dtype=tf.int64) + int(first_index)
    keys = seeding.example_keys(tf.constant([int(seed), 0], tf.int32), images)
    draw = seeding.integers(keys, classifier.num_classes - 1).numpy()
    other = draw + (draw >= original.target)  # skip the target itself
    contrast = attribute(classifier, x, other, **method_options)
    reduction = "abs-sum" if absolute else "sum"
    first, second = (reduce_channels(r.maps, reduction) for r in (original, contrast))
    values = np.array([spearman(a, b) for a, b in zip(first, second, strict=True)])
    options = {
        "method": original.method,
        "absolute": bool(absolute),
        "seed": int(seed),
        "first_index": int(first_index),
    }
    return MetricResult(
        "random_logit", values, original.target, options, extra={"random_target": other}
    )
