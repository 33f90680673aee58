"""Vanilla gradient, gradient × input and SmoothGrad against closed forms; batching invariance,
determinism, targets and no retracing."""

import json

import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import corner_images, linear_model, trained_corner_cnn

from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency import (
    AGGREGATIONS,
    Attribution,
    attribute,
    grad_cam,
    gradient,
    gradient_x_input,
    integrated_gradients,
    smoothgrad,
)

RNG = np.random.default_rng(7)
WEIGHTS = RNG.normal(size=(12, 4))
BIAS = RNG.normal(size=4)
X = RNG.random((6, 2, 2, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def linear() -> Classifier:
    return Classifier(linear_model(WEIGHTS, BIAS, (2, 2, 3)))


def quadratic_classifier(a: np.ndarray) -> Classifier:
    """logit 0 = sum_i a_i x_i² over 4 pixels, logit 1 = 0; gradient 2 a x."""
    coefficients = tf.constant(a.reshape(1, -1), tf.float32)

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        f = tf.reduce_sum(coefficients * tf.square(tf.reshape(images, (-1, 4))), axis=1)
        return tf.stack([f, tf.zeros_like(f)], axis=1)

    return Classifier(logits, input_shape=(2, 2, 1), output="logits")


def test_gradient_of_a_linear_model_is_the_target_weight_row(linear: Classifier) -> None:
    targets = np.array([0, 1, 2, 3, 2, 1])
    result = gradient(linear, X, targets)
    np.testing.assert_allclose(result.maps.reshape(6, -1), WEIGHTS.T[targets], atol=1e-6)
    np.testing.assert_array_equal(result.target, targets)
    logits = X.reshape(6, -1) @ WEIGHTS + BIAS
    np.testing.assert_allclose(result.score, logits[np.arange(6), targets], atol=1e-5)
    np.testing.assert_array_equal(result.predicted, logits.argmax(1))


def test_default_target_is_the_predicted_class(linear: Classifier) -> None:
    predicted = (X.reshape(6, -1) @ WEIGHTS + BIAS).argmax(1)
    for target in (None, "predicted"):
        result = gradient(linear, X, target)
        np.testing.assert_array_equal(result.target, predicted)
        np.testing.assert_allclose(result.maps.reshape(6, -1), WEIGHTS.T[predicted], atol=1e-6)
    one_class = gradient(linear, X, 2)
    np.testing.assert_allclose(
        one_class.maps.reshape(6, -1), np.tile(WEIGHTS.T[2], (6, 1)), atol=1e-6
    )


def test_probability_objective_has_the_softmax_chain_rule(linear: Classifier) -> None:
    logits = X.reshape(6, -1) @ WEIGHTS + BIAS
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    target = 1
    expected = p[:, [target]] * (WEIGHTS.T[target] - p @ WEIGHTS.T)  # dp_t/dx
    result = gradient(linear, X, target, objective="probability")
    np.testing.assert_allclose(result.maps.reshape(6, -1), expected, atol=1e-6)
    custom = gradient(linear, X, target, objective=lambda z, y: 3.0 * z[:, 1] - z[:, 0])
    np.testing.assert_allclose(
        custom.maps.reshape(6, -1), np.tile(3 * WEIGHTS.T[1] - WEIGHTS.T[0], (6, 1)), atol=1e-5
    )


def test_gradient_x_input_multiplies_elementwise(linear: Classifier) -> None:
    result = gradient_x_input(linear, X, 3)
    np.testing.assert_allclose(
        result.maps.reshape(6, -1), X.reshape(6, -1) * WEIGHTS.T[3], atol=1e-6
    )
    assert result.method == "gradient_x_input"


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_smoothgrad_without_noise_is_the_vanilla_gradient(aggregation: str) -> None:
    classifier = quadratic_classifier(np.array([1.0, -2.0, 0.5, 3.0]))
    x = RNG.random((3, 2, 2, 1), dtype=np.float32)
    vanilla = gradient(classifier, x, 0).maps
    smooth = smoothgrad(classifier, x, 0, noise=0.0, samples=7, aggregation=aggregation).maps
    expected = {
        "mean": vanilla,
        "abs": np.abs(vanilla),
        "square": vanilla**2,
        "vargrad": np.zeros_like(vanilla),
    }[aggregation]
    np.testing.assert_allclose(smooth, expected, rtol=1e-6, atol=1e-6)


def test_smoothgrad_moments_match_gaussian_noise_on_a_quadratic() -> None:
    # gradient 2 a (x + e), e ~ N(0, s²): mean 2 a x, variance 4 a² s², E g² = 4 a² (x² + s²)
    a = np.array([1.0, -2.0, 0.5, 3.0])
    classifier = quadratic_classifier(a)
    x = np.full((1, 2, 2, 1), 0.5, np.float32)
    sigma = 0.2  # noise 0.2 of the range [0, 1]
    samples = 4000
    results = {
        name: smoothgrad(
            classifier, x, 0, noise=sigma, samples=samples, aggregation=name, seed=3
        ).maps.ravel()
        for name in AGGREGATIONS
    }
    standard_error = 2 * np.abs(a) * sigma / np.sqrt(samples)
    np.testing.assert_array_less(np.abs(results["mean"] - 2 * a * 0.5), 4 * standard_error)
    np.testing.assert_allclose(results["vargrad"], 4 * a**2 * sigma**2, rtol=0.1)
    np.testing.assert_allclose(results["square"], 4 * a**2 * (0.25 + sigma**2), rtol=0.05)
    np.testing.assert_allclose(
        results["square"] - results["mean"] ** 2, results["vargrad"], rtol=1e-3
    )
    assert np.all(results["abs"] >= np.abs(results["mean"]) - 1e-6)


def test_smoothgrad_of_a_linear_model_is_the_weight_row_for_any_noise(linear: Classifier) -> None:
    result = smoothgrad(linear, X, 2, noise=0.5, samples=5)
    np.testing.assert_allclose(result.maps.reshape(6, -1), np.tile(WEIGHTS.T[2], (6, 1)), atol=1e-5)


def test_smoothgrad_same_seed_same_bytes_other_seed_other_maps() -> None:
    classifier = quadratic_classifier(np.array([1.0, -2.0, 0.5, 3.0]))
    x = RNG.random((3, 2, 2, 1), dtype=np.float32)
    first = smoothgrad(classifier, x, 0, samples=9, seed=11).maps
    again = smoothgrad(classifier, x, 0, samples=9, seed=11).maps
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, smoothgrad(classifier, x, 0, samples=9, seed=12).maps)


def test_streaming_in_batches_with_first_index_gives_the_noise_of_one_call() -> None:
    classifier = quadratic_classifier(np.array([1.0, -2.0, 0.5, 3.0]))
    x = RNG.random((5, 2, 2, 1), dtype=np.float32)
    whole = smoothgrad(classifier, x, 0, samples=6, seed=2).maps
    parts = [
        smoothgrad(classifier, x[i : i + 2], 0, samples=6, seed=2, first_index=i).maps
        for i in (0, 2, 4)
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
    shifted = smoothgrad(classifier, x[2:], 0, samples=6, seed=2).maps  # without first_index
    assert not np.allclose(shifted, whole[2:])


@pytest.fixture(scope="module")
def corner_cnn() -> Classifier:
    return Classifier(trained_corner_cnn())


def test_results_do_not_depend_on_internal_batch_size(corner_cnn: Classifier) -> None:
    x, _ = corner_images(5, seed=4)
    runs = {
        "gradient": lambda c: gradient(corner_cnn, x, internal_batch_size=c),
        "smoothgrad": lambda c: smoothgrad(
            corner_cnn, x, samples=13, aggregation="vargrad", internal_batch_size=c
        ),
        "ig": lambda c: integrated_gradients(
            corner_cnn, x, baseline="uniform", steps=11, internal_batch_size=c
        ),
        "grad_cam": lambda c: grad_cam(corner_cnn, x, internal_batch_size=c),
    }
    for name, run in runs.items():
        reference = run(1000)
        for chunk in (1, 3, 7):
            result = run(chunk)
            scale = np.abs(reference.maps).max()
            np.testing.assert_allclose(result.maps, reference.maps, atol=1e-5 * scale, err_msg=name)
            np.testing.assert_array_equal(result.target, reference.target)
            if reference.delta is not None:
                np.testing.assert_allclose(result.delta, reference.delta, atol=1e-4)


def test_single_gradients_share_one_forward_pass_and_are_traced_once() -> None:
    """The gradient's compiled function calls the model once (predictions, f(x) and the
    gradient share one forward pass per chunk); gradient × input reuses it, and later calls
    with other batch sizes, chunk sizes and targets retrace nothing and keep the closed form."""
    traces = []
    weights, bias = WEIGHTS.astype(np.float32), BIAS.astype(np.float32)

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        traces.append(1)  # Python runs only while tracing (and in the eager probe)
        return tf.reshape(images, (-1, 12)) @ weights + bias

    classifier = Classifier(logits, input_shape=(2, 2, 3), output="logits")
    before = len(traces)
    gradient(classifier, X[:2], internal_batch_size=3)
    assert len(traces) == before + 1
    expected_logits = X.reshape(6, -1).astype(np.float64) @ WEIGHTS + BIAS
    for n, target, chunk in ((6, None, 4), (6, [3, 2, 1, 0, 1, 2], 1), (1, 2, 64)):
        for method in (gradient, gradient_x_input):
            result = method(classifier, X[:n], target, internal_batch_size=chunk)
            predicted = expected_logits[:n].argmax(1)
            targets = predicted if target is None else np.broadcast_to(target, (n,))
            np.testing.assert_array_equal(result.target, targets)
            np.testing.assert_array_equal(result.predicted, predicted)
            row = WEIGHTS.T[targets].reshape(n, 2, 2, 3)
            times = X[:n] if method is gradient_x_input else 1.0
            np.testing.assert_allclose(result.maps, row * times, atol=1e-5)
            np.testing.assert_allclose(
                result.score, expected_logits[np.arange(n), targets], atol=1e-5
            )
    assert len(traces) == before + 1


def test_no_retracing_across_batch_sizes_steps_chunks_and_targets() -> None:
    traces = []

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        traces.append(1)  # Python runs only while tracing
        return tf.reshape(images, (-1, 4))[:, :3] * tf.constant([1.0, 2.0, 3.0])

    classifier = Classifier(logits, input_shape=(2, 2, 1), output="logits")
    x = RNG.random((8, 2, 2, 1), dtype=np.float32)
    integrated_gradients(classifier, x[:2], steps=5, internal_batch_size=3)
    smoothgrad(classifier, x[:2], samples=3, internal_batch_size=3)
    after_first = len(traces)
    integrated_gradients(classifier, x, [0, 1, 2, 0, 1, 2, 0, 1], steps=17, internal_batch_size=5)
    integrated_gradients(classifier, x[:3], 1, steps=2, rule="riemann_left", internal_batch_size=64)
    smoothgrad(classifier, x, samples=11, noise=0.3, seed=4, internal_batch_size=2)
    assert len(traces) == after_first


def test_bad_targets_and_options_raise_input_errors(linear: Classifier) -> None:
    with pytest.raises(InputError):
        gradient(linear, X, 4)  # only 4 classes
    with pytest.raises(InputError):
        gradient(linear, X, [0, 1])  # wrong length
    with pytest.raises(InputError):
        gradient(linear, X, "label")
    with pytest.raises(InputError):
        gradient(linear, X, objective="cross-entropy")
    with pytest.raises(InputError):
        gradient(linear, X, internal_batch_size=0)
    with pytest.raises(InputError):
        smoothgrad(linear, X, aggregation="median")
    with pytest.raises(InputError):
        smoothgrad(linear, X, noise=-0.1)
    with pytest.raises(InputError):
        gradient(linear, X * 3)  # outside the bounds
    with pytest.raises(InputError):
        gradient(linear, X[:0])
    with pytest.raises(InputError):
        attribute(linear, X, "no_such_method")
    with pytest.raises(InputError):
        gradient(linear.model, X)  # not a Classifier


def test_attribution_converts_to_numpy_and_json(linear: Classifier) -> None:
    result = attribute(linear, X, "ig", target=1, steps=4, baseline="white")
    assert isinstance(result, Attribution) and len(result) == 6
    data = json.loads(result.to_json(include_maps=True))
    np.testing.assert_allclose(np.array(data["maps"]), result.maps, atol=1e-7)
    np.testing.assert_allclose(data["delta"], result.delta)
    assert data["method"] == "integrated_gradients"
    assert data["options"] == {
        "baseline": "white",
        "steps": 4,
        "rule": "gauss_legendre",
        "objective": "logit",
        "internal_batch_size": 64,
    }
    assert "maps" not in result.to_dict()
    assert set(result.to_numpy()) >= {"maps", "target", "predicted", "delta", "options"}
