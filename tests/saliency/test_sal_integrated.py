"""Integrated Gradients against closed forms: completeness, per-feature answers, quadrature."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from sal_helpers import analytic_classifier, analytic_function, linear_model

from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency import RULES, integrated_gradients, make_baseline, quadrature

X = np.array([[[[1.0, 2.0, 3.0]]], [[[0.5, -1.5, 2.0]]], [[[-2.0, 0.3, -3.0]]]], np.float32)
BASELINE = np.array([[[0.2, 0.4, -1.0]]], np.float32)  # non-zero, shared by all images


def expected_gap(x: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    return analytic_function(x[:, 0, 0].astype(np.float64)) - analytic_function(
        np.broadcast_to(baseline, x.shape)[:, 0, 0].astype(np.float64)
    )


@pytest.mark.parametrize("rule", RULES)
def test_attributions_sum_to_f_x_minus_f_baseline_and_delta_agrees(rule: str) -> None:
    classifier = analytic_classifier()
    steps = {"gauss_legendre": 16, "riemann_middle": 256, "riemann_trapezoid": 256}.get(rule, 8192)
    result = integrated_gradients(
        classifier, X, target=0, baseline=BASELINE, steps=steps, rule=rule, internal_batch_size=4099
    )
    totals = result.maps.reshape(3, -1).sum(axis=1, dtype=np.float64)
    gap = expected_gap(X, BASELINE)
    np.testing.assert_allclose(totals, gap, atol=1e-3)
    np.testing.assert_allclose(result.score - result.baseline_score, gap, atol=1e-4)
    np.testing.assert_allclose(result.delta, totals - gap, atol=1e-4)


def test_each_feature_gets_its_own_closed_form_share() -> None:
    # f is a sum of one-variable terms, so IG gives each its exact change:
    # 5 (x - x'), y² - y'², sin z - sin z'.
    result = integrated_gradients(
        analytic_classifier(), X, target=0, baseline=BASELINE, steps=24, rule="gauss_legendre"
    )
    v, b = X[:, 0, 0].astype(np.float64), BASELINE[0, 0].astype(np.float64)
    expected = np.stack(
        [5 * (v[:, 0] - b[0]), v[:, 1] ** 2 - b[1] ** 2, np.sin(v[:, 2]) - np.sin(b[2])], axis=1
    )
    np.testing.assert_allclose(result.maps[:, 0, 0], expected, atol=1e-5)


def test_a_keras_model_computing_the_same_function_gives_the_same_answer() -> None:
    inputs = keras.Input((1, 1, 3))
    flat = keras.layers.Flatten()(inputs)
    f = keras.layers.Lambda(lambda v: 5 * v[:, 0:1] + v[:, 1:2] ** 2 + keras.ops.sin(v[:, 2:3]))(
        flat
    )
    model = keras.Model(inputs, keras.layers.Concatenate()([f, -f]))
    classifier = Classifier(model, bounds=(-4.0, 4.0), output="logits")
    result = integrated_gradients(classifier, X, target=0, baseline=BASELINE, steps=16)
    np.testing.assert_allclose(
        result.maps.reshape(3, -1).sum(1), expected_gap(X, BASELINE), atol=1e-3
    )


def steps_needed(rule: str, tolerance: float = 1e-3) -> int:
    """The fewest steps (powers of two) for which every |delta| is below tolerance."""
    classifier = analytic_classifier()
    for steps in 2 ** np.arange(1, 14):
        result = integrated_gradients(
            classifier,
            X,
            target=0,
            baseline=BASELINE,
            steps=int(steps),
            rule=rule,
            internal_batch_size=4096,
        )
        if np.max(np.abs(result.delta)) < tolerance:
            return int(steps)
    raise AssertionError(f"{rule} did not converge")


def test_gauss_legendre_needs_far_fewer_steps_than_riemann() -> None:
    gauss = steps_needed("gauss_legendre")
    assert gauss <= 8
    for rule in ("riemann_left", "riemann_right"):
        assert steps_needed(rule) >= 64 * gauss
    assert steps_needed("riemann_trapezoid") >= 4 * gauss
    assert steps_needed("riemann_middle") >= 2 * gauss


def test_linear_model_is_exact_for_every_rule_and_step_count() -> None:
    rng = np.random.default_rng(3)
    weights, bias = rng.normal(size=(12, 4)), rng.normal(size=4)
    classifier = Classifier(linear_model(weights, bias, (2, 2, 3)))
    x = rng.random((4, 2, 2, 3), dtype=np.float32)
    baseline = rng.random((4, 2, 2, 3), dtype=np.float32)
    targets = np.array([0, 3, 1, 2])
    expected = (x - baseline).reshape(4, -1) * weights.T[targets]
    for rule in RULES:
        for steps in (2, 5):
            result = integrated_gradients(
                classifier, x, targets, baseline=baseline, steps=steps, rule=rule
            )
            np.testing.assert_allclose(result.maps.reshape(4, -1), expected, atol=1e-5)
            np.testing.assert_allclose(result.delta, 0.0, atol=1e-4)


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_weights_sum_to_one_and_nodes_lie_in_the_unit_interval(rule: str) -> None:
    alphas, weights = quadrature(rule, 7)
    assert alphas.shape == weights.shape == (7,)
    assert np.all((alphas >= 0) & (alphas <= 1))
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=12), st.integers(min_value=0, max_value=23))
def test_gauss_legendre_integrates_polynomials_of_degree_below_2n_exactly(
    n: int, degree: int
) -> None:
    alphas, weights = quadrature("gauss_legendre", n)
    if degree < 2 * n:
        np.testing.assert_allclose(np.sum(weights * alphas**degree), 1 / (degree + 1), rtol=1e-10)


def test_riemann_rules_have_their_textbook_nodes() -> None:
    np.testing.assert_allclose(quadrature("riemann_left", 4)[0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(quadrature("riemann_right", 4)[0], [0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(quadrature("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875])
    alphas, weights = quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])
    with pytest.raises(InputError):
        quadrature("riemann_trapezoid", 1)
    with pytest.raises(InputError):
        quadrature("simpson", 4)


@pytest.mark.parametrize("baseline", ["black", "white", "uniform", "blur"])
def test_completeness_holds_for_every_baseline_kind(baseline: str) -> None:
    centre = analytic_classifier()  # f of the centre pixel of 3x3 images, so blurring matters
    classifier = Classifier(
        lambda images, training=False: centre.logits(images[:, 1:2, 1:2]),
        input_shape=(3, 3, 3),
        output="logits",
        bounds=centre.bounds,
    )
    x = np.tile(X, (1, 3, 3, 1))
    x[:, 0, 0] = -x[:, 1, 1]  # make the blur differ from the image
    result = integrated_gradients(classifier, x, target=0, baseline=baseline, steps=16)
    reference = make_baseline(classifier, tf.constant(x), baseline).numpy()
    gap = analytic_function(x[:, 1, 1].astype(np.float64)) - analytic_function(
        reference[:, 1, 1].astype(np.float64)
    )
    np.testing.assert_allclose(result.maps.reshape(3, -1).sum(1), gap, atol=1e-3)
    assert np.max(np.abs(result.delta)) < 1e-3
    assert not np.allclose(reference, x)


def test_baselines_are_what_they_say() -> None:
    classifier = analytic_classifier()
    x = tf.constant(X)
    low, high = classifier.bounds
    assert np.all(make_baseline(classifier, x, "black").numpy() == low)
    assert np.all(make_baseline(classifier, x, "white").numpy() == high)
    noise = make_baseline(classifier, x, "uniform", seed=5).numpy()
    assert np.all((noise >= low) & (noise <= high))
    np.testing.assert_array_equal(noise, make_baseline(classifier, x, "uniform", seed=5).numpy())
    assert not np.array_equal(noise, make_baseline(classifier, x, "uniform", seed=6).numpy())
    # image i's noise does not depend on the other images
    np.testing.assert_array_equal(noise[:2], make_baseline(classifier, x[:2], "uniform", seed=5))
    np.testing.assert_array_equal(make_baseline(classifier, x, BASELINE).numpy()[2], BASELINE)
    with pytest.raises(InputError):
        make_baseline(classifier, x, "grey")
    with pytest.raises(InputError):
        make_baseline(classifier, x, np.zeros((2, 2, 3)))
    with pytest.raises(InputError):
        make_baseline(classifier, x, np.full((1, 1, 3), 9.0))  # outside the bounds


def test_blur_keeps_constant_images_and_smooths_others() -> None:
    classifier = Classifier(
        lambda images, training=False: tf.reshape(images, (-1, 64))[:, :2],
        input_shape=(8, 8, 1),
        output="logits",
    )
    constant = np.full((1, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_allclose(
        make_baseline(classifier, tf.constant(constant), "blur"), constant, atol=1e-6
    )
    impulse = np.zeros((1, 8, 8, 1), np.float32)
    impulse[0, 4, 4] = 1.0
    blurred = make_baseline(classifier, tf.constant(impulse), "blur", blur_sigma=1.0).numpy()[
        0, ..., 0
    ]
    assert blurred[4, 4] < 0.2 and blurred[4, 5] > 0.05  # spread out, symmetric around the peak
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-6)
    np.testing.assert_allclose(blurred.sum(), 1.0, atol=1e-5)  # mass kept away from borders
