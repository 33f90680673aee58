"""Taped input gradients against closed forms and finite differences."""

import numpy as np
import tensorflow as tf
from core_helpers import linear_model, small_cnn

from robustkit.gradients import input_gradient_penalty, input_gradients
from robustkit.models import Classifier

RNG = np.random.default_rng(1)
W = RNG.normal(size=(12, 3)).astype(np.float32)
B = RNG.normal(size=3).astype(np.float32)
X = RNG.random((5, 2, 2, 3), dtype=np.float32)
Y = np.array([0, 1, 2, 1, 0])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_cross_entropy_gradient_of_linear_model_is_closed_form() -> None:
    classifier = Classifier(linear_model(W, B, (2, 2, 3)))
    result = input_gradients(classifier, X, Y)
    z = X.reshape(5, -1) @ W + B
    p = softmax(z)
    expected = (p - np.eye(3)[Y]) @ W.T  # d CE / d x = W (p - e_y)
    np.testing.assert_allclose(result.gradient.numpy().reshape(5, -1), expected, atol=1e-5)
    np.testing.assert_allclose(result.logits.numpy(), z, atol=1e-5)
    np.testing.assert_allclose(result.loss.numpy(), -np.log(p[np.arange(5), Y]), atol=1e-5)


def test_margin_and_targeted_signs() -> None:
    classifier = Classifier(linear_model(W, B, (2, 2, 3)))
    z = X.reshape(5, -1) @ W + B
    others = np.where(np.eye(3)[Y] > 0, -np.inf, z)
    best_other = others.argmax(1)
    margin = input_gradients(classifier, X, Y, loss="margin")
    np.testing.assert_allclose(margin.loss.numpy(), others.max(1) - z[np.arange(5), Y], atol=1e-5)
    expected = (W[:, best_other] - W[:, Y]).T
    np.testing.assert_allclose(margin.gradient.numpy().reshape(5, -1), expected, atol=1e-5)
    targeted = input_gradients(classifier, X, Y, loss="margin", targeted=True)
    np.testing.assert_allclose(targeted.gradient.numpy(), -margin.gradient.numpy())
    logit = input_gradients(classifier, X, Y, loss="logit")
    np.testing.assert_allclose(logit.gradient.numpy().reshape(5, -1), W[:, Y].T, atol=1e-6)


def test_gradients_inside_tf_function_match_eager() -> None:
    classifier = Classifier(small_cnn(seed=2))
    x = RNG.random((4, 8, 8, 1), dtype=np.float32)
    y = tf.constant([0, 1, 2, 3])
    compiled = tf.function(lambda x, y: input_gradients(classifier, x, y).gradient)
    np.testing.assert_allclose(
        compiled(x, y).numpy(), input_gradients(classifier, x, y).gradient.numpy(), atol=1e-6
    )


def test_double_backprop_penalty_matches_finite_differences() -> None:
    model = small_cnn(seed=3, activation="tanh")  # smooth, so second derivatives exist
    classifier = Classifier(model)
    x = RNG.random((3, 8, 8, 1)).astype(np.float32)
    y = tf.constant([0, 1, 2])
    kernel = model.layers[0].kernel  # first conv kernel [3, 3, 1, 4]

    def penalty() -> tf.Tensor:
        return tf.reduce_sum(input_gradient_penalty(classifier, x, y)[0])

    with tf.GradientTape() as tape:
        value = penalty()
    analytic = tape.gradient(value, kernel).numpy()
    assert value.numpy() > 0
    original = kernel.numpy().astype(np.float64)
    step = 1e-3
    for index in [(0, 0, 0, 0), (1, 2, 0, 1), (2, 1, 0, 3)]:
        values = []
        for sign in (1, -1):
            changed = original.copy()
            changed[index] += sign * step
            kernel.assign(changed.astype(np.float32))
            values.append(float(penalty().numpy()))
        kernel.assign(original.astype(np.float32))
        numeric = (values[0] - values[1]) / (2 * step)
        np.testing.assert_allclose(analytic[index], numeric, rtol=2e-2, atol=1e-4)
