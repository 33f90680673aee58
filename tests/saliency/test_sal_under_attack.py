"""Explanations under attack: a linear model's gradient map does not move (correlation and
overlap exactly 1), a quadratic model's moves exactly as a NumPy recomputation says, the top-k
overlap and rank correlation of hand-made maps, and the panel's tiles."""

import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import linear_model

from robustkit.attacks import PGD
from robustkit.errors import InputError
from robustkit.io import to_uint8
from robustkit.models import Classifier
from robustkit.saliency import compare_maps, explanation_shift, heatmap, shift_panel
from robustkit.saliency.render import PANEL_GAP
from robustkit.saliency.under_attack import importance_moved, top_k_pixels

RNG = np.random.default_rng(5)
SHAPE = (4, 4, 1)
X = RNG.uniform(0.2, 0.8, (6, *SHAPE)).astype(np.float32)


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of distinct values (the test maps have no ties)."""
    return np.argsort(np.argsort(values)).astype(np.float64)


def numpy_spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a.ravel()), ranks(b.ravel()))[0, 1])


def numpy_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    top = lambda v: set(np.argsort(-v.ravel(), kind="stable")[:k].tolist())  # noqa: E731
    return len(top(a) & top(b)) / k


def quadratic_classifier(a: np.ndarray, b: np.ndarray) -> Classifier:
    """logit 0 = sum_i a_i x_i², logit 1 = sum_i b_i x_i over 16 pixels: the gradient of
    logit 0 is 2 a x, so it moves with the image."""
    a_row, b_row = (tf.constant(v.reshape(1, -1), tf.float32) for v in (a, b))

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        flat = tf.reshape(images, (-1, 16))
        return tf.stack([tf.reduce_sum(a_row * flat**2, 1), tf.reduce_sum(b_row * flat, 1)], axis=1)

    return Classifier(logits, input_shape=SHAPE, output="logits")


def test_a_linear_models_gradient_map_is_the_same_for_clean_and_adversarial() -> None:
    weights = RNG.normal(size=(16, 3))
    classifier = Classifier(linear_model(weights, RNG.normal(size=3), SHAPE))
    attack = PGD("linf", 0.3, steps=10, seed=1)
    shift = explanation_shift(classifier, X, None, "gradient", attack, top_k=0.25)
    assert np.abs(shift.x_adv - X).max() > 0.1  # the attack moved the images
    assert shift.flipped.any()  # and changed some predictions
    np.testing.assert_array_equal(shift.adversarial.maps, shift.clean.maps)
    assert shift.spearman.tolist() == [1.0] * 6
    assert shift.top_k_overlap.tolist() == [1.0] * 6
    assert shift.top_k_pixels == 4
    np.testing.assert_array_equal(shift.adversarial.target, shift.clean.target)
    direct = attack(classifier, X)
    np.testing.assert_array_equal(shift.x_adv, direct.x_adv)  # the attack as called alone


def test_a_quadratic_models_map_moves_as_numpy_recomputes() -> None:
    a, b = RNG.uniform(0.5, 2.0, 16), RNG.normal(size=16)
    classifier = quadratic_classifier(a, b)
    shift = explanation_shift(
        classifier, X, None, "gradient", PGD("linf", 0.15, steps=5, seed=0), top_k=0.25
    )
    targets = shift.clean.target
    flat, flat_adv = X.reshape(6, -1).astype(np.float64), shift.x_adv.reshape(6, -1)
    expected_clean = np.where(targets[:, None] == 0, 2 * a * flat, b)  # d logit / d x
    expected_adv = np.where(targets[:, None] == 0, 2 * a * flat_adv, b)
    np.testing.assert_allclose(shift.clean.maps.reshape(6, -1), expected_clean, rtol=1e-5)
    np.testing.assert_allclose(shift.adversarial.maps.reshape(6, -1), expected_adv, rtol=1e-5)
    moved = np.flatnonzero(targets == 0)
    assert moved.size and (shift.spearman[moved] < 1).any()  # the attack changed those maps
    for i in range(6):
        clean, adversarial = np.abs(expected_clean[i]), np.abs(expected_adv[i])
        assert shift.spearman[i] == pytest.approx(numpy_spearman(clean, adversarial), abs=1e-12)
        assert shift.top_k_overlap[i] == numpy_overlap(clean, adversarial, 4)


def test_adversarial_target_predicted_explains_the_adversarials_own_class() -> None:
    weights = RNG.normal(size=(16, 2))
    classifier = Classifier(linear_model(weights, np.zeros(2), SHAPE))
    shift = explanation_shift(
        classifier,
        X,
        None,
        "gradient",
        PGD("linf", 0.5, steps=10, seed=2),
        adversarial_target="predicted",
        top_k=0.5,
    )
    flipped = shift.flipped
    assert flipped.any()
    np.testing.assert_array_equal(shift.adversarial.target, shift.adversarial.predicted)
    maps = np.abs(weights.T)  # class k's gradient map is |W[:, k]|
    for i in range(6):
        clean, adversarial = maps[shift.clean.target[i]], maps[shift.adversarial.target[i]]
        expected = 1.0 if not flipped[i] else numpy_spearman(clean, adversarial)
        assert shift.spearman[i] == pytest.approx(expected, abs=1e-12)
        assert shift.top_k_overlap[i] == numpy_overlap(clean, adversarial, 8)


def test_compare_maps_of_hand_made_maps() -> None:
    base = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)  # pixel 15 most salient
    reversed_map = base[:, ::-1, ::-1]
    swapped = base.copy().reshape(-1)
    swapped[[15, 0]] = swapped[[0, 15]]  # the top pixel drops to the bottom
    constant = np.ones_like(base)
    clean = np.concatenate([base, base, base, base])
    adversarial = np.concatenate([-base, reversed_map, swapped.reshape(1, 4, 4, 1), constant])
    correlations, overlap, k = compare_maps(clean, adversarial, top_k=0.25)
    assert k == 4
    # |-base| = base (magnitudes); reversed: rank correlation -1; swapped: top 4 share 3
    assert correlations[:3].tolist() == pytest.approx(
        [1.0, -1.0, numpy_spearman(base, swapped)], abs=1e-12
    )
    assert overlap[:3].tolist() == [1.0, 0.0, 0.75]
    assert np.isnan(correlations[3]) and np.isnan(overlap[3])  # a constant map
    assert top_k_pixels(0.1, 28, 28) == 78 and top_k_pixels(1e-6, 4, 4) == 1


def test_importance_moved_and_the_panel_tiles() -> None:
    clean_map = RNG.normal(size=(4, 4, 1))
    adversarial_map = 3 * clean_map  # same shares: nothing moved
    np.testing.assert_allclose(importance_moved(clean_map, adversarial_map), 0, atol=1e-15)
    other = RNG.normal(size=(4, 4, 1))
    moved = importance_moved(clean_map, other)
    expected = (
        np.abs(other[..., 0]) / np.abs(other).sum()
        - np.abs(clean_map[..., 0]) / np.abs(clean_map).sum()
    )
    np.testing.assert_allclose(moved, expected)
    assert moved.sum() == pytest.approx(0, abs=1e-12)
    x_adv = np.clip(X[0] + 0.1, 0, 1)
    picture = shift_panel(X[0], x_adv, clean_map, other, scale=2)
    assert picture.size == (2 * (5 * 4 + 4 * PANEL_GAP), 2 * 4)
    tiles = np.asarray(picture)[::2, ::2]
    step = 4 + PANEL_GAP
    np.testing.assert_array_equal(tiles[:, :4], np.repeat(to_uint8(X[0]), 3, -1))
    np.testing.assert_array_equal(tiles[:, step : step + 4], np.repeat(to_uint8(x_adv), 3, -1))
    np.testing.assert_array_equal(tiles[:, 2 * step : 2 * step + 4], np.asarray(heatmap(clean_map)))
    np.testing.assert_array_equal(tiles[:, 3 * step : 3 * step + 4], np.asarray(heatmap(other)))
    assert (tiles[:, 4:step] == 255).all()  # the white gap


def test_given_adversarials_and_bad_arguments() -> None:
    weights = RNG.normal(size=(16, 3))
    classifier = Classifier(linear_model(weights, np.zeros(3), SHAPE))
    given = np.clip(X + 0.05, 0, 1)
    shift = explanation_shift(classifier, X, method="gradient", attack=given)
    np.testing.assert_array_equal(shift.x_adv, given)
    assert shift.to_dict()["spearman"] == [1.0] * 6
    with pytest.raises(InputError, match="top_k"):
        explanation_shift(classifier, X, method="gradient", attack=given, top_k=0)
    with pytest.raises(InputError, match="adversarial images are"):
        explanation_shift(classifier, X, method="gradient", attack=given[:2])
    with pytest.raises(InputError, match="adversarial_target"):
        explanation_shift(classifier, X, attack=given, adversarial_target="other")
    with pytest.raises(InputError, match="Give an attack"):
        explanation_shift(classifier, X)
