"""Guided backpropagation against the hand-derived rule (ReLU, ReLU6, leaky slopes; MobileNetV2
against a twin with the rule written out), refused where no guided rule exists; SquareGrad and
VarGrad as the SmoothGrad aggregations, every method reached by name, and no retracing in the
new methods."""

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
    guided_relu_layers,
    input_gradients,
    is_relu_layer,
)
from robustkit.models import Classifier, Preprocessing
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


def capped_net() -> keras.Model:
    """Flatten -> Dense(6) -> ReLU(max_value=6) -> Dense(5, relu6) -> Dense(4) ->
    ReLU(negative_slope=0.1, max_value=4) -> Dense(4) -> LeakyReLU(0.3) -> Dense(3,
    leaky_relu) -> Dense(2), with kernels large enough that pre-activations fall below 0,
    inside the active range and above the cap (kernels N(0, 4), biases U(-1, 3))."""
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            layers.Flatten(),
            layers.Dense(6, name="d1"),
            layers.ReLU(max_value=6, name="relu6_layer"),
            layers.Dense(5, activation="relu6", name="d2"),
            layers.Dense(4, name="d3"),
            layers.ReLU(negative_slope=0.1, max_value=4, name="capped_leaky"),
            layers.Dense(4, name="d4"),
            layers.LeakyReLU(negative_slope=0.3, name="leaky"),
            layers.Dense(3, activation="leaky_relu", name="d5"),
            layers.Dense(2, name="d6"),
        ]
    )
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, bias = layer.get_weights()
            layer.set_weights([rng.normal(0, 4, kernel.shape), rng.uniform(-1, 3, bias.shape)])
    return model


# (f, f') of each activation of capped_net, after Dense layers d1, d2, d3, d4 and d5.
ACTIVATIONS = (
    (lambda z: np.clip(z, 0, 6), lambda z: ((z > 0) & (z < 6)).astype(float)),
    (lambda z: np.clip(z, 0, 6), lambda z: ((z > 0) & (z < 6)).astype(float)),
    (
        lambda z: np.where(z < 0, 0.1 * z, np.minimum(z, 4)),
        lambda z: np.where(z < 0, 0.1, (z < 4).astype(float)),
    ),
    (lambda z: np.where(z < 0, 0.3 * z, z), lambda z: np.where(z < 0, 0.3, 1.0)),
    (lambda z: np.where(z < 0, 0.2 * z, z), lambda z: np.where(z < 0, 0.2, 1.0)),  # default 0.2
)


def capped_by_hand(model: keras.Model, x: np.ndarray, target: int, guided: bool):
    """Forward and backward in NumPy (float64): through a = f(z), the gradient g becomes
    f'(z) g (vanilla) or f'(z) max(g, 0) (guided). Returns (map, logits, pre-activations)."""
    dense = [model.get_layer(f"d{i}").get_weights() for i in range(1, 7)]
    a, pre = x.reshape(len(x), -1).astype(np.float64), []
    for (kernel, bias), (f, _) in zip(dense[:-1], ACTIVATIONS, strict=True):
        pre.append(a @ kernel + bias)
        a = f(pre[-1])
    logits = a @ dense[-1][0] + dense[-1][1]
    g = np.tile(dense[-1][0][:, target], (len(x), 1))
    backward = zip(dense[:-1], ACTIVATIONS, pre, strict=True)
    for (kernel, _), (_, derivative), z in reversed(list(backward)):
        g = derivative(z) * (np.maximum(g, 0) if guided else g) @ kernel.T
    return g.reshape(x.shape), logits, pre


def test_guided_backprop_through_relu6_and_leaky_relus_is_the_hand_rule() -> None:
    """ReLU6 passes back only where 0 < z < 6 and the incoming gradient is positive; a slope
    below zero scales what passes there; the vanilla gradient is the same recursion ungated."""
    keras.utils.set_random_seed(6)
    model = capped_net()
    classifier = Classifier(model)
    x = np.random.default_rng(7).random((32, 2, 2, 1), dtype=np.float32)
    _, logits, pre = capped_by_hand(model, x, 0, guided=True)
    np.testing.assert_allclose(classifier.logits(x).numpy(), logits, rtol=1e-5)
    for z, cap in zip(pre, (6, 6, 4, None, None), strict=True):  # every branch is exercised
        assert (z < 0).any() and (z > 0).any() and (cap is None or (z > cap).any())
    names = [layer.name for layer in guided_relu_layers(classifier)]
    assert names == ["relu6_layer", "d2", "capped_leaky", "leaky", "d5"]
    for target in (0, 1):
        guided = guided_backprop(classifier, x, target).maps
        expected = capped_by_hand(model, x, target, guided=True)[0]
        np.testing.assert_allclose(guided, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
        vanilla = attribute(classifier, x, "gradient", target).maps
        plain = capped_by_hand(model, x, target, guided=False)[0]
        np.testing.assert_allclose(vanilla, plain, rtol=1e-4, atol=1e-6 * np.abs(plain).max())
        assert np.abs(guided - vanilla).max() > 0.1 * np.abs(vanilla).max()  # the gate acts


def small_dense(*layers: keras.layers.Layer) -> keras.Model:
    return keras.Sequential(
        [keras.Input((2, 2, 1)), keras.layers.Flatten(), *layers, keras.layers.Dense(2)]
    )


SUPPORTED = r"Guided backpropagation is defined for ReLU, ReLU6 / ReLU\(max_value=...\)"


@pytest.mark.parametrize(
    ("layers", "named"),
    [
        ((keras.layers.Dense(3, activation="swish", name="s"),), r"silu \(1 layer, e.g. 's'\)"),
        (
            (keras.layers.Dense(3, activation="relu"), keras.layers.Activation("gelu", name="g")),
            r"gelu \(1 layer, e.g. 'g'\)",
        ),
        (
            (keras.layers.ReLU(), keras.layers.ELU(name="e"), keras.layers.PReLU(name="p")),
            r"ELU \(1 layer, e.g. 'e'\); PReLU \(1 layer, e.g. 'p'\)",
        ),
        (
            (keras.layers.Dense(3, activation="tanh", name="t1"), keras.layers.Dense(3, "tanh")),
            r"tanh \(2 layers, e.g. 't1'\)",
        ),
    ],
)
def test_guided_backprop_refuses_activations_without_a_guided_rule(layers, named) -> None:
    """Swish, GELU, ELU, PReLU, tanh: refused, naming what is supported and what was found,
    even beside ReLU layers (a guided pass would run them plainly: neither guided nor the
    gradient)."""
    classifier = Classifier(small_dense(*layers))
    with pytest.raises(InputError, match=SUPPORTED + r".*" + named + r".*no guided rule"):
        guided_backprop(classifier, X)


def test_guided_backprop_needs_relu_layers_of_a_keras_model() -> None:
    linear = Classifier(small_dense())
    with pytest.raises(InputError, match=r"no ReLU layer \(ReLU, ReLU6"):
        guided_backprop(linear, X)
    function = Classifier(
        lambda images, training=False: tf.reshape(images, (-1, 4))[:, :2],
        input_shape=(2, 2, 1),
        output="logits",
    )
    with pytest.raises(InputError, match="Keras model"):
        guided_backprop(function, X)
    softmax_head = small_dense(keras.layers.Dense(3, activation="relu"))
    head = keras.Sequential([softmax_head, keras.layers.Activation("softmax")])
    assert len(guided_relu_layers(Classifier(head))) == 1  # the output's softmax is no obstacle


class GuidedReLU6(keras.layers.Layer):
    """ReLU6 whose backward pass is the guided rule written out, g [0 < z < 6] [g > 0]."""

    def call(self, z: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def guided(z: tf.Tensor):
            def backward(g: tf.Tensor) -> tf.Tensor:
                active = tf.cast((z > 0) & (z < 6), g.dtype)
                return g * active * tf.cast(g > 0, g.dtype)

            return tf.clip_by_value(z, 0.0, 6.0), backward

        return guided(z)


def guided_twin(model: keras.Model) -> keras.Model:
    """A copy of the model (same weights) with every ReLU layer, all ReLU6, made a GuidedReLU6:
    its plain gradient is guided backpropagation by an independent route."""
    relus = [layer for layer in all_layers(model) if is_relu_layer(layer)]
    assert relus and all(
        isinstance(layer, keras.layers.ReLU) and layer.max_value == 6 for layer in relus
    )

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.ReLU):
            return GuidedReLU6(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def inverted_residual() -> keras.Model:
    """A MobileNetV2 block on 6x6x3: 1x1 expansion, BatchNorm, ReLU6, depthwise 3x3,
    BatchNorm, ReLU6, linear 1x1 projection, BatchNorm, residual sum; a pooled dense head."""
    layers = keras.layers
    image = keras.Input((6, 6, 3))
    h = layers.ReLU(6.0)(layers.BatchNormalization()(layers.Conv2D(12, 1)(image)))
    h = layers.ReLU(6.0)(layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(h)))
    h = layers.Add()([image, layers.BatchNormalization()(layers.Conv2D(3, 1)(h))])
    return keras.Model(image, layers.Dense(3)(layers.GlobalAveragePooling2D()(h)))


def mobilenet_v2() -> keras.Model:
    """MobileNetV2 (alpha 0.35, random weights) at 32x32 with its softmax top."""
    return keras.applications.MobileNetV2(
        weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=3
    )


@pytest.mark.parametrize("build", [inverted_residual, mobilenet_v2])
def test_guided_backprop_on_relu6_networks_is_the_written_out_rule(build) -> None:
    """On an inverted-residual block and on MobileNetV2 (35 ReLU6 layers, a softmax head
    unwrapped to logits), the guided map is the plain gradient of the GuidedReLU6 twin."""
    keras.utils.set_random_seed(8)
    model = build()
    shape = model.input_shape[1:]
    classifier = Classifier(model, preprocessing=Preprocessing(scale=2, offset=-1))
    twin = classifier.with_model(guided_twin(model))
    x = np.random.default_rng(9).random((2, *shape), dtype=np.float32)
    result = guided_backprop(classifier, x, 1)
    y = tf.constant([1, 1])
    expected = input_gradients(twin, x, y, loss="logit").gradient.numpy()
    scale = np.abs(expected).max()
    assert scale > 0 and np.mean(result.maps != 0) > 0.5
    np.testing.assert_allclose(result.maps, expected, rtol=1e-4, atol=1e-6 * scale)
    vanilla = attribute(classifier, x, "gradient", 1).maps
    assert np.abs(result.maps - vanilla).max() > 0.05 * scale  # the residual sum is ungated


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
