"""Grad-CAM++, LayerCAM and ScoreCAM: closed forms on the identity-convolution model of
test_sal_gradcam, a NumPy recomputation of ScoreCAM on a multi-channel model, localisation and
chunking on the trained corner CNN."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sal_helpers import CORNER, corner_images, trained_corner_cnn
from test_sal_gradcam import DENSE, X, nested_model, sequential_model

from robustkit.models import Classifier
from robustkit.saliency import attribute, grad_cam_plus_plus, layer_cam, score_cam


def gradient_map(target: int) -> np.ndarray:
    """d logit_t / d A on the identity-convolution model: DENSE[:, t] as a 6x6 map."""
    return DENSE[:, target].reshape(6, 6, 1)


@pytest.mark.parametrize("build", [sequential_model, nested_model], ids=["sequential", "nested"])
def test_grad_cam_plus_plus_closed_form(build) -> None:
    classifier = Classifier(build())
    for target in range(3):
        g = gradient_map(target)
        total = X.sum(axis=(1, 2), keepdims=True)  # sum of the activations A = x
        alpha = g**2 / (2 * g**2 + total * g**3)
        weight = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
        result = grad_cam_plus_plus(classifier, X, target)
        np.testing.assert_allclose(result.maps, np.maximum(weight * X, 0), rtol=1e-5, atol=1e-6)
        assert result.method == "grad_cam_plus_plus" and result.options["layer"] == "features"


@pytest.mark.parametrize("build", [sequential_model, nested_model], ids=["sequential", "nested"])
def test_layer_cam_closed_form(build) -> None:
    classifier = Classifier(build())
    for target in range(3):
        expected = np.maximum(np.maximum(gradient_map(target), 0) * X, 0)
        np.testing.assert_allclose(layer_cam(classifier, X, target).maps, expected, atol=1e-6)


def test_score_cam_closed_form_on_the_identity_convolution() -> None:
    classifier = Classifier(sequential_model())
    low = X.min(axis=(1, 2, 3), keepdims=True)
    high = X.max(axis=(1, 2, 3), keepdims=True)
    mask = (X - low) / (high - low)
    for target in range(3):
        weight = (mask * X).reshape(4, -1) @ DENSE[:, target]  # f(mask x) - f(black): no bias
        result = score_cam(classifier, X, target)
        expected = np.maximum(weight[:, None, None, None] * X, 0)
        np.testing.assert_allclose(result.maps, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.baseline_score, 0.0, atol=1e-6)


class CountImages(keras.layers.Layer):
    """The identity, counting the images of every forward pass through it (in graphs too)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.images = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        self.images.assign_add(tf.cast(tf.shape(x)[0], tf.float32))
        return x


def strided_model(conv: np.ndarray, bias: np.ndarray, dense: np.ndarray) -> keras.Model:
    """A 2x2 stride-2 convolution with K channels (ReLU) on 6x6x1 images, then Dense logits; a
    :class:`CountImages` layer ("count") first."""
    features = keras.layers.Conv2D(conv.shape[-1], 2, strides=2, activation="relu", name="features")
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            CountImages(name="count"),
            features,
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    features.set_weights([conv.astype(np.float32), bias.astype(np.float32)])
    model.layers[-1].set_weights([dense.astype(np.float32), np.array([0.3, -0.2], np.float32)])
    return model


@pytest.mark.parametrize(("shift", "varying_maps"), [(0.0, 2), (10.0, 6)])
def test_score_cam_matches_a_numpy_recomputation_on_a_multichannel_layer(
    shift: float, varying_maps: int
) -> None:
    """Bias as drawn: channels 1 and 2 are 0 everywhere after the ReLU (constant: mask 0,
    w = 0); shifted by +10 every map varies. One pass per image and channel whose map varies,
    besides the 3n + 1 of f(x), f(b), a probe and the activations."""
    rng = np.random.default_rng(3)
    conv, bias, dense = (
        rng.normal(size=(2, 2, 1, 3)),
        rng.normal(size=3) * 0.1,
        rng.normal(size=(27, 2)),
    )
    bias = bias + shift
    model = strided_model(conv, bias, dense)
    classifier = Classifier(model)
    x = rng.random((2, 6, 6, 1), dtype=np.float32)
    baseline = 0.25

    def forward(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        patches = images.reshape(-1, 3, 2, 3, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 3, 3, 4)
        activation = np.maximum(patches @ conv.reshape(4, 3) + bias, 0)  # [n, 3, 3, K]
        return activation, activation.reshape(len(images), -1) @ dense + [0.3, -0.2]

    activation, _ = forward(x)
    varying = activation.max(axis=(1, 2)) > activation.min(axis=(1, 2))  # [n, K]
    assert varying.sum() == varying_maps
    upsample = lambda a: tf.image.resize(a, (6, 6), method="bilinear").numpy()  # noqa: E731
    counter = model.get_layer("count").images
    for target in (0, 1):
        counter.assign(0.0)
        result = score_cam(classifier, x, target, baseline=baseline, internal_batch_size=2)
        assert counter.numpy() == 3 * len(x) + 1 + varying.sum()
        base = forward(np.full((1, 6, 6, 1), baseline))[1][0, target]
        weights = np.zeros((2, 3))
        for k in range(3):
            up = upsample(activation[..., k : k + 1])
            low, high = up.min(axis=(1, 2, 3), keepdims=True), up.max(axis=(1, 2, 3), keepdims=True)
            mask = np.where(high > low, (up - low) / np.where(high > low, high - low, 1), 0)
            weights[:, k] = forward(baseline + mask * (x - baseline))[1][:, target] - base
        cam = np.maximum((weights[:, None, None, :] * activation).sum(-1, keepdims=True), 0)
        np.testing.assert_allclose(result.maps, upsample(cam), rtol=1e-4, atol=1e-5)
        assert result.options["baseline"] == baseline


@pytest.fixture(scope="module")
def corner_cnn() -> Classifier:
    return Classifier(trained_corner_cnn())


@pytest.mark.parametrize("name", ["gradcam++", "layercam", "scorecam"])
def test_cams_localise_the_corner_and_do_not_depend_on_chunking(
    corner_cnn: Classifier, name: str
) -> None:
    x, y = corner_images(12, seed=1)
    bright = x[y == 1]
    result = attribute(corner_cnn, bright, name, 1)
    maps = result.maps[..., 0]
    share_of_corner = maps[:, :CORNER, :CORNER].sum((1, 2)) / maps.sum((1, 2))
    assert np.all(share_of_corner > 2 * CORNER**2 / maps[0].size)  # twice a uniform map's
    peaks = np.array([np.unravel_index(np.argmax(m), m.shape) for m in maps])
    assert np.all(peaks < CORNER)  # the peak lies on the bright corner
    for chunk in (1, 4):
        chunked = attribute(corner_cnn, bright, name, 1, internal_batch_size=chunk)
        np.testing.assert_allclose(chunked.maps, result.maps, atol=1e-5 * np.abs(maps).max())
