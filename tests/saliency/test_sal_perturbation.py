"""Occlusion, RISE, KernelSHAP and LIME against closed forms and NumPy recomputations with the
same masks; seeding, streaming and chunking invariance."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import linear_model

from robustkit import seeding
from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency import attribute, kernel_shap, lime, occlusion, rise
from robustkit.saliency.masks import (
    grid_labels,
    lime_coalitions,
    point_keys,
    rise_masks,
    shared_keys,
)

RNG = np.random.default_rng(11)
SHAPE = (4, 6, 2)  # H, W, C
WEIGHTS = RNG.normal(size=(48, 3))
BIAS = RNG.normal(size=3)
X = RNG.random((3, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def linear() -> Classifier:
    return Classifier(linear_model(WEIGHTS, BIAS, SHAPE))


def logit(images: np.ndarray, target: int) -> np.ndarray:
    """The linear model's logit of class ``target`` for images [..., H, W, C]."""
    flat = images.reshape(*images.shape[:-3], -1)
    return flat @ WEIGHTS[:, target] + BIAS[target]


def contributions(x: np.ndarray, baseline: float, target: int) -> np.ndarray:
    """Each pixel's exact share w . (x - b) of the linear logit, summed over channels [N, H, W]."""
    return (WEIGHTS[:, target].reshape(SHAPE) * (x - baseline)).sum(-1)


def patch_sums(values: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """Every pixel of values [N, H, W] replaced by the sum over its patch of the grid."""
    labels = grid_labels(values.shape[1], values.shape[2], patch).ravel()
    flat = values.reshape(len(values), -1)
    sums = np.stack([np.bincount(labels, weights=row) for row in flat])
    return sums[:, labels].reshape(values.shape)


OWN_BASELINES = np.random.default_rng(5).random(X.shape, dtype=np.float32)  # one per image


@pytest.mark.parametrize(
    ("baseline", "value", "name"),
    [("black", 0.0, "black"), (0.5, 0.5, 0.5), (OWN_BASELINES, OWN_BASELINES, "array")],
)
def test_occlusion_of_a_linear_model_is_each_patch_sum_of_w_times_x_minus_b(
    linear: Classifier, baseline, value, name
) -> None:
    for patch in [(2, 3), (3, 4)]:  # (3, 4): the last patches are cut by the border
        result = occlusion(linear, X, 2, patch_size=patch, baseline=baseline)
        expected = patch_sums(contributions(X, value, 2), patch)
        assert result.maps.shape == (3, 4, 6, 1)
        np.testing.assert_allclose(result.maps[..., 0], expected, atol=1e-5)
        np.testing.assert_allclose(result.score, logit(X, 2), atol=1e-5)
        assert result.options["patch_size"] == list(patch)
        assert result.options["baseline"] == name


def test_overlapping_occlusion_is_the_mean_drop_of_the_covering_windows(
    linear: Classifier,
) -> None:
    result = occlusion(linear, X, 0, patch_size=(2, 3), stride=(1, 2), internal_batch_size=5)
    share = contributions(X, 0.0, 0)
    total = np.zeros_like(share)
    count = np.zeros_like(share)
    for top in range(0, 3):  # 4 rows: windows at rows 0, 1, 2 reach the border
        for left in (0, 2, 4):  # 6 columns, width 3, stride 2: the window at 4 is cut
            window = np.zeros((4, 6), bool)
            window[top : top + 2, left : left + 3] = True
            drop = (share * window).sum((1, 2))
            total += drop[:, None, None] * window
            count += window
    np.testing.assert_allclose(result.maps[..., 0], total / count, atol=1e-5)


def test_occlusion_rejects_patches_larger_than_the_image(linear: Classifier) -> None:
    with pytest.raises(InputError, match="larger than the images"):
        occlusion(linear, X, patch_size=5)
    with pytest.raises(InputError):
        occlusion(linear, X, patch_size=0)


def rise_reference(
    x: np.ndarray,
    baseline: np.ndarray,
    target: int,
    samples: int,
    grid: int,
    keep: float,
    seed: int,
) -> np.ndarray:
    """RISE of the linear model recomputed in NumPy from the very masks, shared by all images,
    with masked pixels showing baseline [N, H, W, C]."""
    keys = shared_keys(tf.constant(seed), tf.range(samples))
    masks = rise_masks(keys, tf.constant(grid), tf.constant(keep), 4, 6).numpy()
    points = baseline[:, None] + masks[None] * (x - baseline)[:, None]  # [N, masks, H, W, C]
    scores = logit(points, target)
    return (scores[..., None, None, None] * masks[None]).sum(1) / masks.sum(0)


def test_rise_is_the_mask_weighted_mean_score_recomputed_with_the_same_masks(
    linear: Classifier,
) -> None:
    own = OWN_BASELINES  # the per-image path; black and 0.5 are one baseline for all images
    for baseline, values in [("black", np.zeros_like(X)), (0.5, np.full_like(X, 0.5)), (own, own)]:
        result = rise(
            linear, X, 1, samples=40, grid_size=3, keep_probability=0.4, seed=5, baseline=baseline
        )
        expected = rise_reference(X, values, 1, 40, 3, 0.4, 5)
        np.testing.assert_allclose(result.maps, expected, rtol=1e-5, atol=1e-5)
    assert result.options["samples"] == 40 and result.options["seed"] == 5


def test_rise_masks_are_smooth_shifted_grids_kept_with_the_given_probability() -> None:
    keys = point_keys(
        tf.constant(0), tf.constant(0, tf.int64), tf.zeros(4000, tf.int32), tf.range(4000)
    )
    masks = rise_masks(keys, tf.constant(4), tf.constant(0.3), 10, 10).numpy()
    assert masks.shape == (4000, 10, 10, 1)
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    # each pixel is a convex mix of Bernoulli(0.3) cells: its mean over the masks is 0.3
    np.testing.assert_allclose(masks.mean(0), 0.3, atol=0.04)
    assert len(np.unique(masks.round(6))) > 10  # bilinear: not only 0 and 1


def test_rise_masks_are_the_binary_grid_upsampled_bilinearly_and_cropped_at_the_shift() -> None:
    """The factored masks against their definition: tf.image.resize of the kept cells to
    (grid + 1) * cell pixels, cropped at the drawn shift."""
    keys = shared_keys(tf.constant(2), tf.range(50))
    for grid, height, width in [(3, 10, 10), (4, 9, 14), (7, 28, 28)]:
        masks = rise_masks(keys, tf.constant(grid), tf.constant(0.5), height, width).numpy()
        cells = seeding.uniform(keys, [grid, grid]).numpy() < 0.5
        cell_rows, cell_columns = -(-height // grid), -(-width // grid)
        shifts = zip(
            seeding.integers(seeding.fold_in(keys, 1), cell_rows).numpy(),
            seeding.integers(seeding.fold_in(keys, 2), cell_columns).numpy(),
            strict=True,
        )
        upsampled = tf.image.resize(
            cells[..., None].astype(np.float32),
            ((grid + 1) * cell_rows, (grid + 1) * cell_columns),
            method="bilinear",
        ).numpy()
        for mask, image, (top, left) in zip(masks, upsampled, shifts, strict=True):
            crop = image[top : top + height, left : left + width]
            np.testing.assert_allclose(mask, crop, atol=1e-6)


def test_rise_streaming_seeding_and_chunking(linear: Classifier) -> None:
    whole = rise(linear, X, 0, samples=20, seed=3, internal_batch_size=7)
    again = rise(linear, X, 0, samples=20, seed=3, internal_batch_size=7)
    assert whole.maps.tobytes() == again.maps.tobytes()
    parts = [
        rise(linear, X[i : i + 1], 0, samples=20, seed=3, first_index=i).maps for i in range(3)
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole.maps, rtol=1e-5, atol=1e-6)
    for chunk in (1, 2, 13, 1000):  # fewer points than images, masks split over chunks
        chunked = rise(linear, X, 0, samples=20, seed=3, internal_batch_size=chunk)
        np.testing.assert_allclose(chunked.maps, whole.maps, rtol=1e-5, atol=1e-6)
    other = rise(linear, X, 0, samples=20, seed=4).maps
    assert not np.allclose(other, whole.maps)
    # the masks are shared: an image's map does not depend on the other images or first_index
    alone = rise(linear, X[1:2], 0, samples=20, seed=3, first_index=9).maps
    np.testing.assert_allclose(alone[0], whole.maps[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("baseline", ["black", "white"])
def test_kernel_shap_recovers_the_exact_shapley_values_of_a_linear_model(
    linear: Classifier, baseline: str
) -> None:
    value = 0.0 if baseline == "black" else 1.0
    result = kernel_shap(linear, X, 1, patch_size=(2, 3), samples=40, baseline=baseline)
    expected = patch_sums(contributions(X, value, 1), (2, 3))
    np.testing.assert_allclose(result.maps[..., 0], expected, atol=1e-5)
    # efficiency: the features' values sum to f(x) - f(b)
    np.testing.assert_allclose(result.baseline_score, logit(np.full(SHAPE, value), 1), atol=1e-5)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-5)
    per_feature = result.maps[:, ::2, ::3, 0].reshape(3, -1)  # one pixel of each patch
    np.testing.assert_allclose(per_feature.sum(1), result.score - result.baseline_score, atol=1e-5)


def interaction_classifier() -> Classifier:
    """Images [N, 1, 3, 1] = (a, b, c) -> logits [a b + c², 0]: not additive in the pixels."""

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        v = tf.reshape(images, (-1, 3))
        f = v[:, 0] * v[:, 1] + tf.square(v[:, 2])
        return tf.stack([f, tf.zeros_like(f)], axis=1)

    return Classifier(logits, input_shape=(1, 3, 1), output="logits")


def exact_shapley(value, features: int) -> np.ndarray:
    """Shapley values by enumerating every coalition of ``features`` players."""
    phi = np.zeros(features)
    for i in range(features):
        others = [j for j in range(features) if j != i]
        for size in range(features):
            for coalition in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(features - size - 1)
                weight /= math.factorial(features)
                phi[i] += weight * (value({*coalition, i}) - value(set(coalition)))
    return phi


def test_kernel_shap_tends_to_the_shapley_values_of_an_interaction() -> None:
    classifier = interaction_classifier()
    x = np.array([[[[0.9], [0.6], [0.7]]]], np.float32)

    def value(coalition: set[int]) -> float:
        v = [float(x.ravel()[j]) if j in coalition else 0.0 for j in range(3)]
        return v[0] * v[1] + v[2] ** 2

    result = kernel_shap(classifier, x, 0, patch_size=1, samples=4000, seed=1)
    expected = exact_shapley(value, 3)  # (0.27, 0.27, 0.49)
    np.testing.assert_allclose(result.maps.ravel(), expected, atol=0.01)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-6)


def test_kernel_shap_on_the_images_own_segments(linear: Classifier) -> None:
    segments = RNG.integers(10, 15, size=(3, 4, 6))  # any numbering, a different count each
    segments[1] = 7  # one image has a single region ...
    segments[1, 0, 0] = 9  # ... and one lone pixel
    result = kernel_shap(linear, X, 0, segments=segments, samples=64)
    share = contributions(X, 0.0, 0)
    for i in range(3):
        for label in np.unique(segments[i]):
            region = segments[i] == label
            np.testing.assert_allclose(result.maps[i, region, 0], share[i][region].sum(), atol=1e-5)
    assert result.options["features"] == "segments"
    with pytest.raises(InputError, match="at least 2 features"):
        kernel_shap(linear, X, 0, segments=np.zeros((4, 6), int))
    with pytest.raises(InputError, match="segments must be integers"):
        kernel_shap(linear, X, 0, segments=np.zeros((4, 5), int))


def test_lime_without_ridge_recovers_a_linear_model_and_with_ridge_matches_numpy(
    linear: Classifier,
) -> None:
    plain = lime(linear, X, 2, patch_size=(2, 3), samples=60, ridge=0.0, seed=2)
    np.testing.assert_allclose(
        plain.maps[..., 0], patch_sums(contributions(X, 0.0, 2), (2, 3)), atol=1e-4
    )
    result = lime(linear, X, 2, patch_size=(2, 3), samples=60, ridge=1.0, kernel_width=0.5, seed=2)
    labels = grid_labels(4, 6, (2, 3)).ravel()
    for i in range(3):
        members = lime_coalitions(
            tf.constant(2),
            tf.constant(0, tf.int64),
            tf.fill((60,), i),
            tf.range(60),
            tf.fill((60,), 4),
            tf.constant(4),
        ).numpy()
        shown = members[:, labels].reshape(60, 4, 6, 1)
        scores = logit(shown * X[i], 2)
        distance = 1 - np.sqrt(members.sum(1) / 4)
        weight = np.exp(-(distance**2) / 0.25)
        design = np.c_[np.ones(60), members]
        system = design.T @ (weight[:, None] * design) + np.diag([0, 1, 1, 1, 1])
        beta = np.linalg.solve(system, design.T @ (weight * scores))[1:]
        np.testing.assert_allclose(result.maps[i, ..., 0].ravel(), beta[labels], atol=1e-4)
    assert result.options["ridge"] == 1.0 and result.options["kernel_width"] == 0.5


def test_coalition_methods_are_seeded_and_independent_of_chunking(linear: Classifier) -> None:
    classifier = interaction_classifier()
    x = RNG.random((4, 1, 3, 1), dtype=np.float32)
    for method in (kernel_shap, lime):
        reference = method(classifier, x, 0, patch_size=1, samples=30, seed=7)
        again = method(classifier, x, 0, patch_size=1, samples=30, seed=7)
        assert reference.maps.tobytes() == again.maps.tobytes()
        for chunk in (1, 7):
            chunked = method(
                classifier, x, 0, patch_size=1, samples=30, seed=7, internal_batch_size=chunk
            )
            np.testing.assert_allclose(chunked.maps, reference.maps, atol=1e-5)
        tail = method(classifier, x[2:], 0, patch_size=1, samples=30, seed=7, first_index=2)
        np.testing.assert_allclose(tail.maps, reference.maps[2:], atol=1e-5)


def test_perturbation_methods_are_reached_by_name(linear: Classifier) -> None:
    for name, method in (
        ("occlusion", "occlusion"),
        ("rise", "rise"),
        ("kernelshap", "kernel_shap"),
    ):
        result = attribute(linear, X, name, 1, **({"samples": 8} if name != "occlusion" else {}))
        assert result.method == method and result.maps.shape == (3, 4, 6, 1)
