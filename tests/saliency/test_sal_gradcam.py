"""Grad-CAM: closed form on a hand-built model in every model structure, localisation on a
trained model, layer lookup."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import CORNER, corner_images, trained_corner_cnn

from robustkit.errors import InputError
from robustkit.gradients import _watch_layer_output, activation_gradients
from robustkit.models import Classifier
from robustkit.saliency import find_layer, grad_cam

RNG = np.random.default_rng(5)
DENSE = RNG.normal(size=(36, 3))  # Flatten(6x6x1) -> 3 logits
X = RNG.random((4, 6, 6, 1), dtype=np.float32)


def identity_conv(name: str = "features") -> keras.layers.Conv2D:
    """A 1x1 convolution copying its input: its activations are the image itself."""
    layer = keras.layers.Conv2D(1, 1, name=name)
    layer.build((None, 6, 6, 1))
    layer.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    return layer


def head(softmax: bool = False) -> keras.layers.Dense:
    layer = keras.layers.Dense(3, activation="softmax" if softmax else None, name="head")
    layer.build((None, 36))
    layer.set_weights([DENSE.astype(np.float32), np.zeros(3, np.float32)])
    return layer


def sequential_model(softmax: bool = False) -> keras.Model:
    return keras.Sequential(
        [keras.Input((6, 6, 1)), identity_conv(), keras.layers.Flatten(), head(softmax)]
    )


def functional_model() -> keras.Model:
    inputs = keras.Input((6, 6, 1))
    outputs = head()(keras.layers.Flatten()(identity_conv()(inputs)))
    return keras.Model(inputs, outputs)


def nested_model() -> keras.Model:
    backbone = keras.Sequential([keras.Input((6, 6, 1)), identity_conv()], name="backbone")
    inputs = keras.Input((6, 6, 1))
    outputs = head()(keras.layers.Flatten()(backbone(inputs)))
    return keras.Model(inputs, outputs)


def expected_cam(x: np.ndarray, target: int) -> np.ndarray:
    # A = x (one channel); d logit_t / d A = DENSE[:, t] as a 6x6 map; weight = its mean
    weight = DENSE[:, target].mean()
    return np.maximum(weight * x, 0.0)


@pytest.mark.parametrize(
    "build",
    [sequential_model, functional_model, nested_model, lambda: sequential_model(softmax=True)],
    ids=["sequential", "functional", "nested", "softmax-head"],
)
def test_grad_cam_matches_the_closed_form_in_every_model_structure(build) -> None:
    classifier = Classifier(build())
    for target in range(3):
        result = grad_cam(classifier, X, target)
        assert result.options["layer"] == "features"
        assert result.maps.shape == (4, 6, 6, 1)
        np.testing.assert_allclose(result.maps, expected_cam(X, target), atol=1e-5)


def test_activation_gradients_are_the_dense_weights_through_any_nesting() -> None:
    for model in (sequential_model(), nested_model()):
        classifier = Classifier(model)
        layer = find_layer(classifier, "features")
        y = tf.constant([0, 1, 2, 1])
        result = activation_gradients(classifier, X, y, layer, loss="logit")
        np.testing.assert_allclose(result.activation.numpy(), X, atol=1e-6)
        expected = DENSE.T[[0, 1, 2, 1]].reshape(4, 6, 6, 1)
        np.testing.assert_allclose(result.gradient.numpy(), expected, atol=1e-6)
        assert "call" not in vars(layer)  # the layer's own call is back in place


def test_the_watched_layer_ignores_other_threads_and_is_restored() -> None:
    """While activation gradients watch a layer, calls of the model from another thread run
    unwatched and unrecorded with the ordinary outputs; a call the user had patched on the
    layer before is put back afterwards."""
    model = nested_model()
    layer = find_layer(Classifier(model), "features")
    expected = model(X).numpy()
    outputs: list[tf.Tensor] = []
    seen_by_other_thread = []
    with tf.GradientTape() as tape, _watch_layer_output(layer, tape, outputs):
        worker = threading.Thread(target=lambda: seen_by_other_thread.append(model(X).numpy()))
        worker.start()
        worker.join()
        assert outputs == []
        model(X)
        assert len(outputs) == 1
    np.testing.assert_array_equal(seen_by_other_thread[0], expected)
    assert "call" not in vars(layer)
    users_call = layer.call
    layer.call = users_call  # now an instance attribute, as a user's own patch would be
    with tf.GradientTape() as tape, _watch_layer_output(layer, tape, []):
        assert vars(layer)["call"] is not users_call
    assert vars(layer)["call"] is users_call


def test_grad_cam_localises_the_corner_that_decides_the_class() -> None:
    classifier = Classifier(trained_corner_cnn())
    x, y = corner_images(40, seed=1)
    result = grad_cam(classifier, x[y == 1], target=1)
    np.testing.assert_array_equal(result.predicted, 1)  # the model has learnt the task
    maps = result.maps[..., 0]
    half = maps.shape[1] // 2
    share_top_left = maps[:, :half, :half].sum((1, 2)) / maps.sum((1, 2))
    assert np.all(share_top_left > 0.5)  # a uniform map would give 0.25
    peaks = np.array([np.unravel_index(np.argmax(m), m.shape) for m in maps])
    assert np.all(peaks < CORNER + 1)  # the peak lies on (or next to) the bright corner
    assert result.options["layer"] == "conv_b"  # the last convolution was found


def test_layer_lookup_by_name_default_and_errors() -> None:
    classifier = Classifier(nested_model())
    assert find_layer(classifier, None).name == "features"
    assert find_layer(classifier, "backbone").name == "backbone"
    with pytest.raises(InputError, match="no layer named"):
        find_layer(classifier, "conv9")
    dense_only = Classifier(
        keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    )
    with pytest.raises(InputError, match="no 2-D convolution"):
        grad_cam(dense_only, X)
    with pytest.raises(InputError, match="height, width, channels"):
        grad_cam(dense_only, X, layer=dense_only.model.layers[-1].name)
    callable_model = Classifier(
        lambda images, training=False: tf.reshape(images, (-1, 36))[:, :3],
        input_shape=(6, 6, 1),
        output="logits",
    )
    with pytest.raises(InputError, match="Keras model"):
        grad_cam(callable_model, X)
