"""Sanity checks: Spearman with ties, the cascading randomization test on a trained model,
deletion/insertion curves against a direct computation."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sal_helpers import corner_images, linear_model, trained_corner_cnn

from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency import (
    deletion_insertion,
    gradient,
    gradient_x_input,
    randomization_check,
    spearman,
)
from robustkit.saliency.checks import average_ranks


def test_average_ranks_share_tied_ranks() -> None:
    np.testing.assert_array_equal(average_ranks(np.array([10, 20, 20, 5, 20])), [2, 4, 4, 1, 4])


def test_spearman_closed_forms() -> None:
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert spearman(a, -(a**3)) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, -1, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman(a, [1, 2, 4, 3, 5]) == pytest.approx(0.9)
    # with ties: Pearson of the average ranks [1, 2.5, 2.5, 4] and [1, 2, 3, 4]
    ranks = np.array([1, 2.5, 2.5, 4]) - 2.5
    expected = ranks @ (np.arange(4) - 1.5) / np.sqrt((ranks @ ranks) * 5.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)
    assert np.isnan(spearman(np.zeros(4), a[:4]))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, 12, elements=st.floats(-100, 100)),
    arrays(np.float64, 12, elements=st.floats(-100, 100)),
)
def test_spearman_is_bounded_symmetric_and_rank_invariant(a: np.ndarray, b: np.ndarray) -> None:
    rho = spearman(a, b)
    if np.isnan(rho):
        assert np.ptp(a) == 0 or np.ptp(b) == 0
        return
    assert -1 - 1e-12 <= rho <= 1 + 1e-12
    assert spearman(b, a) == pytest.approx(rho)
    dense_rank_cubed = np.unique(a, return_inverse=True)[1].astype(float) ** 3  # increasing in a
    assert spearman(dense_rank_cubed, b) == pytest.approx(rho)


def test_spearman_agrees_with_scipy_when_it_is_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


@pytest.fixture(scope="module")
def corner_cnn() -> Classifier:
    return Classifier(trained_corner_cnn())


def test_randomizing_the_weights_destroys_gradient_maps_and_weights_come_back(
    corner_cnn: Classifier,
) -> None:
    x, _ = corner_images(20, seed=2)
    before = [v.numpy().copy() for v in corner_cnn.model.weights]
    result = randomization_check(corner_cnn, x, "gradient", seed=0)
    assert result.layers == ["logits", "conv_b", "conv_a"]  # top-down cascade
    assert result.correlations.shape == (3, 20)
    means = result.mean_correlations
    assert means[-1] < 0.3  # fully randomized: the maps no longer resemble the originals
    assert np.all(means[1:] < 0.5)
    for saved, variable in zip(before, corner_cnn.model.weights, strict=True):
        np.testing.assert_array_equal(saved, variable.numpy())
    again = randomization_check(corner_cnn, x, "gradient", seed=0)
    np.testing.assert_array_equal(again.correlations, result.correlations)  # seeded
    data = result.to_dict()
    assert [row["layer"] for row in data["layers"]] == result.layers
    assert data["options"]["absolute"] is True


def test_randomization_restores_the_weights_when_the_method_fails(corner_cnn: Classifier) -> None:
    x, _ = corner_images(4, seed=3)
    before = [v.numpy().copy() for v in corner_cnn.model.weights]
    calls = []

    def failing_method(classifier, images, target, **options):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return gradient(classifier, images, target)

    with pytest.raises(RuntimeError):
        randomization_check(corner_cnn, x, failing_method)
    for saved, variable in zip(before, corner_cnn.model.weights, strict=True):
        np.testing.assert_array_equal(saved, variable.numpy())


def test_randomization_leaves_the_model_untouched_for_other_threads(
    corner_cnn: Classifier,
) -> None:
    """The check randomizes a copy: while it runs, another thread predicting with the model
    gets exactly the original logits, and the copy gives the same correlations as randomizing
    the model in place with the same seed."""
    x, _ = corner_images(6, seed=4)
    original_logits = corner_cnn.model.predict(x, verbose=0)
    seen_by_other_thread = []

    def watching_method(classifier, images, target, **options):
        worker = threading.Thread(
            target=lambda: seen_by_other_thread.append(corner_cnn.model.predict(x, verbose=0))
        )
        worker.start()
        worker.join()
        return gradient(classifier, images, target)

    on_copy = randomization_check(corner_cnn, x, watching_method, seed=1)
    assert len(seen_by_other_thread) == 4  # the original maps and one per randomized layer
    for logits in seen_by_other_thread:
        np.testing.assert_array_equal(logits, original_logits)
    in_place = randomization_check(corner_cnn, x, "gradient", seed=1, in_place=True)
    np.testing.assert_array_equal(on_copy.correlations, in_place.correlations)
    assert on_copy.layers == in_place.layers
    np.testing.assert_array_equal(corner_cnn.model.predict(x, verbose=0), original_logits)


def test_in_place_randomization_restores_the_weights_when_the_method_fails(
    corner_cnn: Classifier,
) -> None:
    x, _ = corner_images(4, seed=3)
    before = [v.numpy().copy() for v in corner_cnn.model.weights]
    calls = []

    def failing_method(classifier, images, target, **options):
        calls.append(1)
        if len(calls) == 2:
            assert classifier is corner_cnn  # in place: the model's own weights are random
            raise RuntimeError("boom")
        return gradient(classifier, images, target)

    with pytest.raises(RuntimeError):
        randomization_check(corner_cnn, x, failing_method, in_place=True)
    for saved, variable in zip(before, corner_cnn.model.weights, strict=True):
        np.testing.assert_array_equal(saved, variable.numpy())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_deletion_and_insertion_curves_match_a_direct_computation() -> None:
    rng = np.random.default_rng(4)
    weights, bias = rng.normal(size=(16, 3)), rng.normal(size=3)
    classifier = Classifier(linear_model(weights, bias, (4, 4, 1)))
    x = rng.random((3, 4, 4, 1), dtype=np.float32)
    saliency = rng.normal(size=(3, 4, 4, 1))
    target = np.array([0, 2, 1])
    curves = deletion_insertion(
        classifier, x, saliency, target, steps=4, insertion_baseline="white", internal_batch_size=5
    )
    np.testing.assert_allclose(curves.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    for i in range(3):
        order = np.argsort(-saliency[i].ravel(), kind="stable")
        for s, k in enumerate([0, 4, 8, 12, 16]):
            removed = x[i].ravel().copy()
            removed[order[:k]] = 0.0  # black
            inserted = np.ones(16)  # white
            inserted[order[:k]] = x[i].ravel()[order[:k]]
            for image, curve in ((removed, curves.deletion), (inserted, curves.insertion)):
                p = softmax(image @ weights + bias)[target[i]]
                assert curve[i, s] == pytest.approx(p, abs=1e-5)
    trapezoid = (curves.deletion[:, 1:] + curves.deletion[:, :-1]).sum(1) / 2 * 0.25
    np.testing.assert_allclose(curves.deletion_auc, trapezoid)
    assert curves.to_dict()["options"]["insertion_baseline"] == "white"


def test_faithful_maps_score_better_than_reversed_ones() -> None:
    # Gradient x input of a linear model is each pixel's exact share of the logit.
    rng = np.random.default_rng(6)
    weights = rng.normal(size=(64, 2))
    classifier = Classifier(linear_model(weights, np.zeros(2), (8, 8, 1)))
    x = rng.random((8, 8, 8, 1), dtype=np.float32)
    faithful = gradient_x_input(classifier, x, 0)
    good = deletion_insertion(classifier, x, faithful, steps=16, insertion_baseline="black")
    bad = deletion_insertion(classifier, x, -faithful.maps, 0, steps=16, insertion_baseline="black")
    assert np.all(good.deletion_auc < bad.deletion_auc)
    assert np.all(good.insertion_auc > bad.insertion_auc)


def test_deletion_insertion_rejects_maps_of_the_wrong_size() -> None:
    classifier = Classifier(linear_model(np.ones((16, 2)), np.zeros(2), (4, 4, 1)))
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(InputError):
        deletion_insertion(classifier, x, np.zeros((2, 3, 4, 1)))
    with pytest.raises(InputError):
        deletion_insertion(classifier, x, np.zeros((2, 4, 4, 1)), steps=0)
