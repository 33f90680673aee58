"""Sanity and quality checks of saliency maps.

* :func:`randomization_check`: the cascading model-parameter randomization test of Adebayo et
  al. (2018, "Sanity checks for saliency maps"). A map that still looks the same after the
  weights are randomized does not explain the model.
* :func:`deletion_insertion`: the deletion and insertion curves of Petsiuk et al. (2018,
  "RISE"): the target's probability as pixels are removed from (or inserted into) the image in
  saliency order, and the areas under those curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.errors import InputError, positive_int
from robustkit.gradients import all_layers
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import DEFAULT_BLUR_SIGMA, make_baseline
from robustkit.saliency.engine import (
    DEFAULT_INTERNAL_BATCH_SIZE,
    compiled,
    image_spec,
    prepare_inputs,
    sum_over_points,
    target_probability,
)
from robustkit.saliency.registry import get_method
from robustkit.saliency.render import reduce_channels
from robustkit.tracing import compile_with_signature

TRUNCATION = 2.0  # randomized weights are normal draws cut at 2 standard deviations


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing their mean rank (float64 [n])."""
    values = np.asarray(values).ravel()
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    group_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two equally sized arrays (flattened), with tied values
    given their mean rank; NaN when either array is constant."""
    rank_a, rank_b = average_ranks(np.asarray(a)), average_ranks(np.asarray(b))
    if rank_a.shape != rank_b.shape:
        raise InputError(
            f"spearman needs arrays of equal size, got {rank_a.size} and {rank_b.size}."
        )
    rank_a -= rank_a.mean()
    rank_b -= rank_b.mean()
    norm = np.sqrt(np.dot(rank_a, rank_a) * np.dot(rank_b, rank_b))
    return float(np.dot(rank_a, rank_b) / norm) if norm > 0 else float("nan")


@dataclass
class RandomizationResult:
    """Outcome of the cascading randomization test on N images.

    Attributes:
        layers: names of the layers randomized, top (output) first; step k has layers[:k+1]
            randomized.
        correlations: float [L, N] Spearman rank correlation between each image's original map
            and its map after step k (NaN where a map is constant).
        method: the saliency method; options: its options and the test's own.
    """

    layers: list[str]
    correlations: np.ndarray
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_correlations(self) -> np.ndarray:
        """float [L] mean correlation over the images at each step (NaNs ignored)."""
        with np.errstate(invalid="ignore"):
            counts = np.sum(np.isfinite(self.correlations), axis=1)
            sums = np.nansum(self.correlations, axis=1)
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN as None)."""
        as_list = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
        return {
            "method": self.method,
            "options": self.options,
            "layers": [
                {"layer": name, "mean": mean, "per_image": as_list(row)}
                for name, mean, row in zip(
                    self.layers,
                    as_list(self.mean_correlations),
                    self.correlations,
                    strict=True,
                )
            ],
        }


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Layers that own trainable weights, output side first (nested models looked into)."""
    layers = [
        layer
        for layer in all_layers(model)
        if not isinstance(layer, keras.Model) and layer.trainable_weights
    ]
    return layers[::-1]


def _randomize(variable: Any, rng: np.random.Generator) -> None:
    """Redraw a variable from a normal truncated at :data:`TRUNCATION` standard deviations,
    with the variable's own standard deviation (its RMS if it is constant; zeros stay zero)."""
    current = np.asarray(variable.numpy())
    values = current.astype(np.float64)
    spread = float(values.std()) or float(np.sqrt(np.mean(np.square(values))))
    draws = rng.standard_normal(values.shape)
    outside = np.abs(draws) > TRUNCATION
    while np.any(outside):
        draws[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(draws) > TRUNCATION
    variable.assign((spread * draws).astype(current.dtype))


def _model_copy(model: keras.Model) -> keras.Model:
    """A copy of the model with the same weights, to randomize without touching the original."""
    try:
        copy = keras.models.clone_model(model)
    except Exception as error:  # Keras raises several types for models it cannot rebuild
        raise InputError(
            f"The randomization check randomizes a copy of model {model.name!r}, so other "
            f"threads can keep using it, but Keras cannot copy it ({error}). Give the model "
            "get_config/from_config, or pass in_place=True if nothing else uses the model "
            "during the check."
        ) from error
    copy.set_weights(model.get_weights())
    return copy


def randomization_check(
    classifier: Classifier,
    x: Any,
    method: str | Any = "gradient",
    target: Any = None,
    *,
    absolute: bool = True,
    seed: int = 0,
    in_place: bool = False,
    **method_options: Any,
) -> RandomizationResult:
    """Cascading model-parameter randomization test (Adebayo et al. 2018).

    The layers with weights are randomized one after another from the output down (each step
    keeps the earlier randomizations); after each step the maps of the same images for the same
    target classes are compared with the original maps by Spearman rank correlation, on the
    channel-summed magnitudes (``absolute``) or signed sums. Randomizing the variables in place
    keeps the compiled method, so each step costs one attribution run and no retracing.

    Args:
        method: a name from :data:`~robustkit.saliency.methods.METHODS` (or an alias) or a
            callable ``(classifier, x, target, **options) -> Attribution``.
        target: as for the methods; resolved once on the original model and kept fixed.
        seed: seed of the random weights.
        in_place: randomize the model's own weights (restored afterwards, also on error)
            instead of a copy's. Only for models Keras cannot copy, and only when no other
            thread uses the model during the check: it would see random weights.
        method_options: passed to the method (e.g. steps=, internal_batch_size=).
    """
    attribute = get_method(method)
    model = classifier.model
    if not isinstance(model, keras.Model):
        raise InputError("The randomization check needs a Keras model inside the Classifier.")
    if not _weighted_layers(model):
        raise InputError(f"Model {model.name!r} has no trainable weights to randomize.")
    reduction = "abs-sum" if absolute else "sum"
    original = attribute(classifier, x, target, **method_options)
    reference = reduce_channels(original.maps, reduction)
    randomized = classifier if in_place else classifier.with_model(_model_copy(model))
    layers = _weighted_layers(randomized.model)
    variables = [v for layer in layers for v in layer.trainable_weights]
    saved = [v.numpy().copy() for v in variables] if in_place else None
    rng = np.random.default_rng(seed)
    correlations = []
    try:
        for layer in layers:
            for variable in layer.trainable_weights:
                _randomize(variable, rng)
            maps = reduce_channels(
                attribute(randomized, x, original.target, **method_options).maps, reduction
            )
            correlations.append([spearman(a, b) for a, b in zip(reference, maps, strict=True)])
    finally:
        if saved is not None:  # in place: give the model its own weights back
            for variable, values in zip(variables, saved, strict=True):
                variable.assign(values)
    return RandomizationResult(
        layers=[layer.name for layer in layers],
        correlations=np.array(correlations, dtype=np.float64),
        method=original.method,
        options={**original.options, "absolute": bool(absolute), "seed": int(seed)},
    )


@dataclass
class PerturbationCurves:
    """Deletion and insertion curves (Petsiuk et al. 2018) of N images.

    Attributes:
        fractions: float [S + 1] share of pixels removed (deletion) or inserted (insertion).
        deletion, insertion: float [N, S + 1] softmax probability of the target at each step.
        deletion_auc, insertion_auc: float [N] areas under the curves over fractions in [0, 1]
            (trapezoid rule). A good map has a low deletion AUC and a high insertion AUC.
        target: int [N] the explained classes; options: how the curves were made.
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    target: np.ndarray
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return {
            name: value.tolist() if isinstance(value, np.ndarray) else value
            for name, value in vars(self).items()
        }


def checked_maps(
    classifier: Classifier, x: Any, attribution: Attribution | Any, target: Any, chunk: Any
) -> tuple[Classifier, tf.Tensor, np.ndarray, tf.Tensor, tf.Tensor]:
    """Checked classifier, images [N, H, W, C], maps [N, H, W, C'] (from an
    :class:`Attribution` or an array), the classes they explain int32 [N] and the chunk size.

    The classes are ``target`` if given, else the attribution's targets, else (plain maps) the
    predicted classes.
    """
    if target is None and isinstance(attribution, Attribution):
        target = attribution.target
    classifier, x, targets, chunk = prepare_inputs(classifier, x, target, chunk)
    maps = attribution.maps if isinstance(attribution, Attribution) else np.asarray(attribution)
    n, height, width = (int(d) for d in x.shape[:3])
    if maps.ndim != 4 or maps.shape[:3] != (n, height, width):
        raise InputError(f"The maps must be [{n}, {height}, {width}, C], got {maps.shape}.")
    if target is None:
        targets = tf.constant(np.argmax(classifier.predict_logits(x), axis=-1), tf.int32)
    return classifier, x, maps, targets, chunk


def salience_ranks(maps: np.ndarray, reduction: str) -> np.ndarray:
    """int32 [N, H * W]: each pixel's rank by its channel-reduced map (0 = most salient; ties
    in reading order)."""
    saliency = reduce_channels(maps, reduction).reshape(len(maps), -1)
    order = np.argsort(-saliency, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[1])[None, :], axis=1)
    return ranks.astype(np.int32)


def _curve_function(classifier: Classifier) -> Any:
    """Compiled ``(image, substrate, ranks, counts, targets, chunk)`` -> probabilities [N, S+1]:
    at step s the pixels ranked below counts[s] are taken from the substrate."""
    height, width, _ = classifier.input_shape

    def run(image, substrate, ranks, counts, targets, chunk):
        n = tf.shape(image)[0]
        points = tf.size(counts)

        def contributions(image_index, step_index):
            replaced = tf.gather(ranks, image_index) < tf.gather(counts, step_index)[:, None]
            mask = tf.reshape(replaced, (-1, height, width, 1))
            point = tf.where(mask, tf.gather(substrate, image_index), tf.gather(image, image_index))
            probability = target_probability(
                classifier.logits(point), tf.gather(targets, image_index)
            )
            return (probability[:, None] * tf.one_hot(step_index, points),)

        (curves,) = sum_over_points(n, points, chunk, contributions, (tf.zeros((n, points)),))
        return curves

    signature = [
        image_spec(classifier),
        image_spec(classifier),
        tf.TensorSpec((None, height * width), tf.int32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.int32),
    ]
    return compile_with_signature(run, signature)


def _area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid-rule area under each curve [N, S+1] over ``fractions``."""
    return np.sum((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions), axis=1)


def deletion_insertion(
    classifier: Classifier,
    x: Any,
    attribution: Attribution | Any,
    target: Any = None,
    *,
    steps: int = 50,
    reduction: str = "sum",
    deletion_baseline: Any = "black",
    insertion_baseline: Any = "blur",
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    seed: int = 0,
    internal_batch_size: int = DEFAULT_INTERNAL_BATCH_SIZE,
) -> PerturbationCurves:
    """Deletion and insertion curves and their AUCs (Petsiuk et al. 2018).

    Pixels (all channels at once) are ordered by the channel-reduced map, most salient first
    (ties in reading order). Deletion replaces the first k pixels of x by
    ``deletion_baseline``; insertion starts from ``insertion_baseline`` and puts back the first
    k pixels of x; k runs over ``steps`` + 1 equally spaced counts from 0 to all pixels. All
    images × steps forward passes run in one compiled loop, ``internal_batch_size`` at a time.

    Args:
        x: the images the maps explain [N, H, W, C].
        attribution: an :class:`Attribution` or maps [N, H, W, C'] (C' = C or 1).
        target: classes whose probability is tracked; default the attribution's targets (for
            plain maps: the predicted classes).
        reduction: channel reduction for the ordering (see
            :func:`~robustkit.saliency.render.reduce_channels`); "sum" ranks positive evidence
            first.
        deletion_baseline, insertion_baseline: substrates, as the IG baselines ("black",
            "white", "uniform", "blur" or an array).
    """
    classifier, x, maps, targets, chunk = checked_maps(
        classifier, x, attribution, target, internal_batch_size
    )
    height, width = (int(d) for d in x.shape[1:3])
    steps = positive_int(steps, "steps")
    ranks = salience_ranks(maps, reduction)
    pixels = height * width
    counts = np.rint(np.linspace(0, pixels, steps + 1)).astype(np.int32)
    function = compiled(classifier, "curves", lambda: _curve_function(classifier))
    ranks = tf.constant(ranks, tf.int32)
    counts_tensor = tf.constant(counts)

    def curves(image: tf.Tensor, substrate: tf.Tensor) -> np.ndarray:
        return function(image, substrate, ranks, counts_tensor, targets, chunk).numpy()

    substrate = {"seed": seed, "blur_sigma": blur_sigma}
    deletion = curves(x, make_baseline(classifier, x, deletion_baseline, **substrate))
    insertion = curves(make_baseline(classifier, x, insertion_baseline, **substrate), x)
    fractions = counts / pixels
    describe = lambda b: b if isinstance(b, str) else "array"  # noqa: E731
    return PerturbationCurves(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=_area(deletion, fractions),
        insertion_auc=_area(insertion, fractions),
        target=targets.numpy().astype(np.int64),
        options={
            "steps": steps,
            "reduction": reduction,
            "deletion_baseline": describe(deletion_baseline),
            "insertion_baseline": describe(insertion_baseline),
            "blur_sigma": float(blur_sigma),
            "seed": int(seed),
            "internal_batch_size": int(chunk),
        },
    )
