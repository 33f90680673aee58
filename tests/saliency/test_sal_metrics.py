"""Metrics against NumPy references: Gini and entropy of known vectors, MuFidelity with the same
subsets, ROAD's noisy linear imputation against a direct solve, sensitivity with the same noise,
the random-logit test; seeding, streaming and chunking invariance."""

import json

import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import linear_model
from test_sal_gradients import quadratic_classifier

from robustkit import seeding
from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency import (
    complexity,
    gradient,
    gradient_x_input,
    mu_fidelity,
    noisy_linear_imputation,
    random_logit,
    road,
    sparseness,
    spearman,
    stability,
)
from robustkit.saliency.checks import salience_ranks
from robustkit.saliency.masks import feature_labels, point_keys, random_subsets
from robustkit.saliency.road import NEIGHBOUR_WEIGHTS

RNG = np.random.default_rng(21)
SHAPE = (4, 4, 1)
WEIGHTS = RNG.normal(size=(16, 3))
BIAS = RNG.normal(size=3)
X = RNG.random((3, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def linear() -> Classifier:
    return Classifier(linear_model(WEIGHTS, BIAS, SHAPE))


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_gini_sparseness_of_known_vectors() -> None:
    maps = np.array([[1.0, 0, 0, 0], [2, 2, 2, 2], [1, -2, 3, -4], [0, 0, 0, 0]]).reshape(
        4, 2, 2, 1
    )
    values = sparseness(maps)
    # (D - 1) / D for one non-zero entry; 0 for equal ones; 10 / (4 * 10) for |.| = 1, 2, 3, 4
    np.testing.assert_allclose(values[:3], [0.75, 0.0, 0.25])
    assert np.isnan(values[3])
    random = RNG.normal(size=(5, 3, 3, 2))
    magnitudes = np.abs(random.reshape(5, -1))
    differences = np.abs(magnitudes[:, :, None] - magnitudes[:, None, :]).sum((1, 2))
    mean_difference = differences / (2 * 18**2 * magnitudes.mean(1))  # Gini as mean difference
    np.testing.assert_allclose(sparseness(random), mean_difference, rtol=1e-12)


def test_entropy_complexity_of_known_vectors() -> None:
    maps = np.array([[1.0, 1, 2, 0], [3, 3, 3, 3], [0, -5, 0, 0], [0, 0, 0, 0]]).reshape(4, 4, 1, 1)
    values = complexity(maps)
    expected_first = -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5))
    np.testing.assert_allclose(values[:3], [expected_first, np.log(4), 0.0], atol=1e-12)
    assert np.isnan(values[3])
    stats = pytest.importorskip("scipy.stats")
    random = RNG.normal(size=(3, 2, 2, 3))
    reference = [stats.entropy(np.abs(m.ravel())) for m in random]
    np.testing.assert_allclose(complexity(random), reference, rtol=1e-12)


def subsets_of(image: int, samples: int, size: int, features: int, seed: int) -> np.ndarray:
    """The subsets MuFidelity draws for an image, bool [samples, features]."""
    keys = point_keys(
        tf.constant(seed), tf.constant(0, tf.int64), tf.fill((samples,), image), tf.range(samples)
    )
    counts = tf.fill((samples,), features)
    return random_subsets(keys, counts, tf.fill((samples,), size), tf.constant(features)).numpy()


def test_mu_fidelity_is_one_for_exact_shares_and_matches_numpy_otherwise(
    linear: Classifier,
) -> None:
    exact = gradient_x_input(linear, X, 1)  # w x: each pixel's exact share of the logit
    result = mu_fidelity(linear, X, exact, samples=30, patch_size=1, subset_fraction=0.25)
    np.testing.assert_allclose(result.values, 1.0, atol=1e-6)
    reversed_ = mu_fidelity(linear, X, -exact.maps, 1, samples=30, patch_size=1)
    np.testing.assert_allclose(reversed_.values, -1.0, atol=1e-6)
    noisy = exact.maps + RNG.normal(size=exact.maps.shape).astype(np.float32)
    result = mu_fidelity(linear, X, noisy, 1, samples=25, patch_size=2, subset_fraction=0.5, seed=4)
    labels, _ = feature_labels(3, 4, 4, None, 2)
    for i in range(3):
        removed = subsets_of(i, 25, 2, 4, seed=4)[:, labels[i]]  # [samples, 16 pixels]
        assert np.all(removed.sum(1) == 8)  # 2 of the 4 patches
        shares = (removed * noisy[i].ravel()).sum(1)
        drops = (removed * (WEIGHTS[:, 1] * X[i].ravel())).sum(1)  # black baseline
        assert result.values[i] == pytest.approx(np.corrcoef(shares, drops)[0, 1], abs=1e-6)
    assert result.options["patch_size"] == [2, 2]
    assert json.loads(json.dumps(result.to_dict()))["metric"] == "mu_fidelity"


def test_mu_fidelity_is_seeded_and_independent_of_chunks_and_batches(linear: Classifier) -> None:
    maps = RNG.normal(size=(3, *SHAPE)).astype(np.float32)
    reference = mu_fidelity(linear, X, maps, 0, samples=20, patch_size=1, seed=9)
    again = mu_fidelity(linear, X, maps, 0, samples=20, patch_size=1, seed=9)
    assert reference.values.tobytes() == again.values.tobytes()
    for chunk in (1, 7):
        chunked = mu_fidelity(
            linear, X, maps, 0, samples=20, patch_size=1, seed=9, internal_batch_size=chunk
        )
        np.testing.assert_allclose(chunked.values, reference.values, atol=1e-6)
    tail = mu_fidelity(linear, X[1:], maps[1:], 0, samples=20, patch_size=1, seed=9, first_index=1)
    np.testing.assert_allclose(tail.values, reference.values[1:], atol=1e-6)
    with pytest.raises(InputError):
        mu_fidelity(linear, X, maps, subset_fraction=1.0)


def imputed_by_direct_solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear imputation as one dense linear system per channel (NumPy reference)."""
    height, width, _ = image.shape
    unknowns = {p: k for k, p in enumerate(zip(*np.nonzero(removed), strict=True))}
    system = np.zeros((len(unknowns), len(unknowns)))
    rhs = np.zeros((len(unknowns), image.shape[-1]))
    for (row, column), k in unknowns.items():
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                weight = NEIGHBOUR_WEIGHTS[dy + 1, dx + 1]
                r, c = row + dy, column + dx
                if weight == 0 or not (0 <= r < height and 0 <= c < width):
                    continue
                system[k, k] += weight
                if (r, c) in unknowns:
                    system[k, unknowns[(r, c)]] -= weight
                else:
                    rhs[k] += weight * image[r, c]
    solution = np.linalg.solve(system, rhs)
    result = image.astype(np.float64).copy()
    for (row, column), k in unknowns.items():
        result[row, column] = solution[k]
    return result


def test_noisy_linear_imputation_solves_the_neighbour_system_and_adds_seeded_noise() -> None:
    images = RNG.random((2, 5, 6, 2)).astype(np.float32)
    removed = RNG.random((2, 5, 6, 1)) < 0.6
    keys = seeding.example_keys(tf.constant([3, 0]), tf.range(2))
    noiseless = noisy_linear_imputation(images, removed, 0.0, keys).numpy()
    for i in range(2):
        expected = imputed_by_direct_solve(images[i], removed[i, ..., 0])
        np.testing.assert_allclose(noiseless[i], expected, atol=2e-6)
    kept = np.broadcast_to(~removed, images.shape)
    assert np.array_equal(noiseless[kept], images[kept])  # kept pixels untouched, bit for bit
    noisy = noisy_linear_imputation(images, removed, 0.1, keys).numpy()
    expected_noise = 0.1 * seeding.normal(keys, [5, 6, 2]).numpy()
    np.testing.assert_allclose((noisy - noiseless)[~kept], expected_noise[~kept], atol=1e-5)
    assert np.array_equal(noisy[kept], images[kept])


def test_road_curves_match_a_direct_computation(linear: Classifier) -> None:
    saliency = RNG.normal(size=(3, *SHAPE))
    target = np.array([0, 2, 1])
    curves = road(
        linear, X, saliency, target, fractions=[0.25, 0.5, 0.75], noise=0.0, internal_batch_size=4
    )
    ranks = salience_ranks(saliency, "sum")
    for i in range(3):
        for s, count in enumerate([4, 8, 12]):
            for removed, curve, correct in (
                (ranks[i] < count, curves.morf, curves.morf_correct),
                (ranks[i] >= 16 - count, curves.lerf, curves.lerf_correct),
            ):
                image = imputed_by_direct_solve(X[i], removed.reshape(4, 4))
                logits = image.ravel() @ WEIGHTS + BIAS
                assert curve[i, s] == pytest.approx(softmax(logits)[target[i]], abs=1e-5)
                assert correct[i, s] == (logits.argmax() == target[i])
    np.testing.assert_array_equal(curves.target, target)
    np.testing.assert_allclose(curves.morf_accuracy, curves.morf_correct.mean(0))
    assert json.loads(json.dumps(curves.to_dict()))["options"]["noise"] == 0.0


def test_road_noise_is_seeded_and_independent_of_chunks_and_batches(linear: Classifier) -> None:
    saliency = gradient_x_input(linear, X, 1)
    reference = road(linear, X, saliency, fractions=[0.3, 0.6], seed=2)
    again = road(linear, X, saliency, fractions=[0.3, 0.6], seed=2)
    assert reference.morf.tobytes() == again.morf.tobytes()
    assert not np.array_equal(
        road(linear, X, saliency, fractions=[0.3, 0.6], seed=3).morf, reference.morf
    )
    chunked = road(linear, X, saliency, fractions=[0.3, 0.6], seed=2, internal_batch_size=1)
    np.testing.assert_allclose(chunked.morf, reference.morf, atol=1e-6)
    np.testing.assert_allclose(chunked.lerf, reference.lerf, atol=1e-6)
    tail = road(linear, X[2:], saliency.maps[2:], 1, fractions=[0.3, 0.6], seed=2, first_index=2)
    np.testing.assert_allclose(tail.lerf, reference.lerf[2:], atol=1e-6)
    with pytest.raises(InputError):
        road(linear, X, saliency, fractions=[1.0])


def test_sensitivity_of_the_gradient_of_a_quadratic_matches_the_same_noise() -> None:
    a = np.array([1.0, -2.0, 0.5, 3.0])
    classifier = quadratic_classifier(a)  # gradient 2 a x: the map moves by 2 a (y - x)
    x = np.full((3, 2, 2, 1), 0.5, np.float32)
    result = stability(classifier, x, "gradient", 0, radius=0.1, samples=6, seed=8)
    keys = seeding.example_keys(tf.constant([8, 0]), tf.range(3))
    distances = np.stack(
        [
            np.linalg.norm(
                2
                * a
                * seeding.uniform(seeding.fold_in(keys, j), [2, 2, 1], -1.0, 1.0)
                .numpy()
                .reshape(3, 4)
                * 0.1,
                axis=1,
            )
            for j in range(6)
        ]
    )
    np.testing.assert_allclose(result.values, distances.mean(0), rtol=1e-4)
    np.testing.assert_allclose(result.extra["max_sensitivity"], distances.max(0), rtol=1e-4)
    tail = stability(classifier, x[1:], "gradient", 0, radius=0.1, samples=6, seed=8, first_index=1)
    np.testing.assert_allclose(tail.values, result.values[1:], rtol=1e-6)
    linf = stability(classifier, x, "gradient", 0, radius=0.1, samples=6, seed=8, norm="linf")
    assert np.all(linf.values <= result.values + 1e-7)
    with pytest.raises(InputError):
        stability(classifier, x, radius=0.0)


def test_a_linear_models_gradient_is_perfectly_stable(linear: Classifier) -> None:
    result = stability(linear, X, "gradient", samples=3, radius=0.2)
    np.testing.assert_allclose(result.values, 0.0, atol=1e-6)
    assert result.options["method"] == "gradient"


def test_random_logit_compares_the_maps_of_the_target_and_a_random_other_class(
    linear: Classifier,
) -> None:
    x = RNG.random((40, *SHAPE), dtype=np.float32)
    result = random_logit(linear, x, "gradient", 1, seed=5)
    others = result.extra["random_target"]
    assert np.all(others != 1) and set(others) == {0, 2}  # uniform among the other classes
    for i in (0, 1, 2):
        expected = spearman(np.abs(WEIGHTS[:, 1]), np.abs(WEIGHTS[:, others[i]]))
        assert result.values[i] == pytest.approx(expected)
    again = random_logit(linear, x, gradient, 1, seed=5)
    np.testing.assert_array_equal(again.extra["random_target"], others)
    tail = random_logit(linear, x[10:], "gradient", 1, seed=5, first_index=10)
    np.testing.assert_array_equal(tail.extra["random_target"], others[10:])
