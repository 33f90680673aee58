"""Guided backpropagation against the hand-derived rule, SquareGrad and VarGrad as the SmoothGrad
aggregations, every method reached by name, and no retracing in the new methods."""

import threading
from typing import ClassVar

import keras
import numpy as np
import pytest
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.gradients import (
    _patch_layer_calls,
    _positive_gradient_gate,
    all_layers,
    guided_input_gradients,
    input_gradients,
    is_relu_layer,
)
from robustkit.models import Classifier
from robustkit.saliency import (
    METHODS,
    attribute,
    guided_backprop,
    lime,
    smoothgrad,
    square_grad,
    vargrad,
)

RNG = np.random.default_rng(2)
X = RNG.normal(0.5, 0.3, size=(5, 2, 2, 1)).clip(0, 1).astype(np.float32)


def relu_net() -> keras.Model:
    """Flatten -> Dense(5, relu) -> [nested: Dense(4) -> ReLU()] -> Dense(3) -> Activation(relu)
    -> Dense(2): ReLUs as a layer's activation, a ReLU layer and an Activation layer."""
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="d2"), keras.layers.ReLU(name="r2")],
        name="inner",
    )
    return keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="relu", name="d1"),
            inner,
            keras.layers.Dense(3, name="d3"),
            keras.layers.Activation("relu", name="r3"),
            keras.layers.Dense(2, name="d4"),
        ]
    )


def hand_derived(model: keras.Model, x: np.ndarray, target: int, guided: bool) -> np.ndarray:
    """Backpropagation by hand: through a ReLU with pre-activation z the gradient g becomes
    g [z > 0] (vanilla) or g [z > 0] [g > 0] (guided)."""
    (w1, b1), (w2, b2) = model.get_layer("d1").get_weights(), model.get_layer("inner").get_weights()
    (w3, b3), (w4, _) = model.get_layer("d3").get_weights(), model.get_layer("d4").get_weights()
    z1 = x.reshape(len(x), -1) @ w1 + b1
    z2 = np.maximum(z1, 0) @ w2 + b2
    z3 = np.maximum(z2, 0) @ w3 + b3

    def through_relu(g: np.ndarray, z: np.ndarray) -> np.ndarray:
        return g * (z > 0) * ((g > 0) if guided else 1)

    g = through_relu(np.tile(w4[:, target], (len(x), 1)), z3) @ w3.T
    g = through_relu(g, z2) @ w2.T
    return (through_relu(g, z1) @ w1.T).reshape(x.shape)


def test_guided_backprop_is_the_hand_derived_rule_at_every_depth() -> None:
    keras.utils.set_random_seed(1)
    model = relu_net()
    classifier = Classifier(model)
    for target in (0, 1):
        guided = guided_backprop(classifier, X, target)
        expected = hand_derived(model, X, target, guided=True)
        np.testing.assert_allclose(guided.maps, expected, atol=1e-6)
        vanilla = attribute(classifier, X, "gradient", target).maps
        np.testing.assert_allclose(vanilla, hand_derived(model, X, target, guided=False), atol=1e-6)
        assert not np.allclose(guided.maps, vanilla)  # the rule changed something
        assert guided.method == "guided_backprop"
    relus = [layer for layer in all_layers(model) if is_relu_layer(layer)]
    assert [layer.name for layer in relus] == ["d1", "r2", "r3"]
    assert not any("call" in vars(layer) for layer in relus)  # each layer's own call is back


def test_the_guided_gate_ignores_other_threads() -> None:
    keras.utils.set_random_seed(3)
    model = relu_net()
    classifier = Classifier(model)
    y = tf.constant([1] * 5)
    seen_by_other_thread = []
    layers = [model.get_layer("d1"), model.get_layer("r3")]
    with _patch_layer_calls(layers, lambda _, output: _positive_gradient_gate(output)):
        worker = threading.Thread(
            target=lambda: seen_by_other_thread.append(
                input_gradients(classifier, X, y, loss="logit").gradient.numpy()
            )
        )
        worker.start()
        worker.join()
    np.testing.assert_allclose(seen_by_other_thread[0], hand_derived(model, X, 1, False), atol=1e-6)
    guided = guided_input_gradients(classifier, X, y).gradient.numpy()
    np.testing.assert_allclose(guided, hand_derived(model, X, 1, True), atol=1e-6)


def test_guided_backprop_needs_relu_layers_of_a_keras_model() -> None:
    linear = Classifier(
        keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    )
    with pytest.raises(InputError, match="no ReLU layer"):
        guided_backprop(linear, X)
    leaky = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.ReLU(negative_slope=0.1),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(InputError, match="no ReLU layer"):
        guided_backprop(Classifier(leaky), X)
    function = Classifier(
        lambda images, training=False: tf.reshape(images, (-1, 4))[:, :2],
        input_shape=(2, 2, 1),
        output="logits",
    )
    with pytest.raises(InputError, match="Keras model"):
        guided_backprop(function, X)


@pytest.mark.parametrize(("method", "aggregation"), [(square_grad, "square"), (vargrad, "vargrad")])
def test_square_grad_and_vargrad_are_the_smoothgrad_aggregations(method, aggregation) -> None:
    keras.utils.set_random_seed(4)
    classifier = Classifier(relu_net())
    options = {"noise": 0.2, "samples": 9, "seed": 5, "first_index": 3, "internal_batch_size": 4}
    named = method(classifier, X, 1, **options)
    reference = smoothgrad(classifier, X, 1, aggregation=aggregation, **options)
    assert named.maps.tobytes() == reference.maps.tobytes()
    assert named.method == method.__name__
    assert named.options == reference.options


class CountingRelu(keras.layers.Layer):
    """A ReLU layer that counts how often it is traced (Python runs only while tracing)."""

    traces: ClassVar[list[int]] = []

    def call(self, inputs):
        CountingRelu.traces.append(1)
        return tf.nn.relu(inputs)


def test_every_method_is_reached_by_name_and_never_retraced() -> None:
    """Each method runs through attribute(name); a second and third call with other batch
    sizes, targets, sample counts, patch and grid sizes and chunk sizes trace nothing new."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 3, padding="same", activation="relu", name="features"),
            CountingRelu(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    classifier = Classifier(model)
    x = RNG.random((6, 4, 4, 1), dtype=np.float32)
    sized = {  # options that change with k
        "occlusion": lambda k: {"patch_size": k, "stride": 1},
        "rise": lambda k: {"samples": 3 * k, "grid_size": k},
        "kernel_shap": lambda k: {"samples": 2 * k, "patch_size": k},
        "integrated_gradients": lambda k: {"steps": k},
    }
    for name in ("smoothgrad", "square_grad", "vargrad"):
        sized[name] = lambda k: {"samples": k}

    def run(name: str, n: int, k: int, chunk: int) -> None:
        options = sized.get(name, lambda _: {})(k)
        result = attribute(classifier, x[:n], name, k % 3, internal_batch_size=chunk, **options)
        assert result.method == name
        assert result.maps.shape[:3] == (n, 4, 4) and np.all(np.isfinite(result.maps))
        np.testing.assert_array_equal(result.target, k % 3)

    for name in METHODS:
        run(name, 2, 2, 3)
    after_first = len(CountingRelu.traces)
    for name in METHODS:
        run(name, 6, 3, 4)
        run(name, 1, 1, 64)
    assert len(CountingRelu.traces) == after_first
    lime(classifier, x[:2], samples=4, patch_size=2)
    after_lime = len(CountingRelu.traces)
    lime(classifier, x, 1, samples=9, patch_size=1, internal_batch_size=5)
    assert len(CountingRelu.traces) == after_lime
