"""Real architectures at small sizes for the model tests (``weights=None``: nothing is
downloaded) and real photos from scikit-image's wheel.

Each :class:`ZooModel` says how to build one model, how pixels in [0, 1] reach it (the
:class:`~robustkit.models.Preprocessing` its Keras application expects, or a scale into the
preprocessing layers it carries) and what the library must find in it (the layer Grad-CAM
reads, whether guided backpropagation applies to it).

Random weights give vanishing or exploding activations in deep networks with BatchNorm in
inference mode; :func:`calibrate_batch_norm` sets every moving statistic to the statistics of
crops of real photos (one training-mode pass with momentum 0), so the logits are O(1) as in
a trained model.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import skimage.data
import tensorflow as tf
from PIL import Image

from robustkit.models import Classifier, Preprocessing

CLASSES = 3
# The costly pairs (every saliency method on the big architectures, ...) run only when asked.
FULL_ZOO = os.environ.get("ROBUSTKIT_FULL_ZOO") == "1"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # real RGB photos inside skimage's wheel
# Keras' "caffe" preprocessing subtracts these from 0..255 BGR pixels; here in RGB order.
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photos as uint8 codes [H, W, 3] (or [H, W] for gray)."""
    return getattr(skimage.data, name)()


def photos(size: int, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """The photos resized (bilinear) to size x size: float32 [N, size, size, 3] in [0, 1]."""
    resized = [
        np.asarray(Image.fromarray(photo(name)).resize((size, size), Image.BILINEAR))
        for name in names
    ]
    return np.stack(resized).astype(np.float32) / 255


def photo_crops(size: int, count: int = 32, seed: int = 0) -> np.ndarray:
    """Random square crops (40-100% of the short side, half of them mirrored) of the photos,
    resized to size x size: float32 [count, size, size, 3] in [0, 1]."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        image = Image.fromarray(photo(PHOTOS[i % len(PHOTOS)]))
        side = int(min(image.size) * rng.uniform(0.4, 1.0))
        left = int(rng.integers(0, image.width - side + 1))
        top = int(rng.integers(0, image.height - side + 1))
        crop = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        codes = np.asarray(crop)
        crops.append(codes[:, ::-1] if i % 2 else codes)
    return np.stack(crops).astype(np.float32) / 255


def calibrate_batch_norm(model: keras.Model, x: np.ndarray | tf.Tensor) -> None:
    """Set every BatchNorm's moving mean and variance to the batch statistics of x (model-input
    units) in one training-mode pass, with dropout off for that pass."""
    layers = list(model._flatten_layers(include_self=False))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    saved = (
        [(layer, layer.momentum) for layer in norms],
        [(layer, layer.rate) for layer in dropouts],
    )
    for layer in norms:
        layer.momentum = 0.0
    for layer in dropouts:
        layer.rate = 0.0
    model(tf.convert_to_tensor(x), training=True)
    for layer, momentum in saved[0]:
        layer.momentum = momentum
    for layer, rate in saved[1]:
        layer.rate = rate


@keras.saving.register_keras_serializable(package="robustkit_tests")
class ReverseChannels(keras.layers.Layer):
    """RGB -> BGR, the channel flip of Keras' "caffe" preprocessing (ResNet50).

    robustkit's Preprocessing is per-channel affine and cannot reorder channels, so the flip
    lives in the model and Preprocessing does the rest (x 255, minus the mean)."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return keras.ops.flip(x, axis=-1)


class TinyResNet(keras.Model):
    """A subclassed classifier: conv stem, one residual block (BatchNorm, ReLU layers), global
    pooling and a dense head giving logits. Expects standardized pixels (x - 0.5) / 0.25."""

    def __init__(self, classes: int = CLASSES, **kwargs: object) -> None:
        super().__init__(**kwargs)
        layers = keras.layers
        self.stem = layers.Conv2D(8, 3, strides=2, padding="same", name="stem_conv")
        self.stem_bn = layers.BatchNormalization(name="stem_bn")
        self.stem_relu = layers.ReLU(name="stem_relu")
        self.block_conv = layers.Conv2D(8, 3, padding="same", name="block_conv")
        self.block_bn = layers.BatchNormalization(name="block_bn")
        self.block_relu = layers.ReLU(name="block_relu")
        self.pool = layers.GlobalAveragePooling2D(name="pool")
        self.head = layers.Dense(classes, name="logits")

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = self.stem_relu(self.stem_bn(self.stem(x), training=training))
        h = self.block_relu(h + self.block_bn(self.block_conv(h), training=training))
        return self.head(self.pool(h))


@dataclass(frozen=True)
class ZooModel:
    """How to build one real model and what robustkit must find in it.

    Attributes:
        name: the key tests use.
        size: input height = width in pixels.
        build: a fresh model with random weights (seeded), BatchNorm calibrated on the photos.
        preprocessing: pixels in [0, 1] to the model's input units, in-graph.
        last_conv: the layer Grad-CAM must pick by default (the model's last 2-D convolution,
            at any depth).
        guided: whether guided backpropagation applies: ReLU-family layers (ReLU, ReLU6) and
            no other nonlinear activation (else refused).
        declared_shape: whether the model declares its input shape (a subclassed one does not;
            the Classifier is then given ``input_shape``).
    """

    name: str
    size: int
    build: Callable[[], keras.Model]
    preprocessing: Preprocessing
    last_conv: str
    guided: bool
    declared_shape: bool = True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def classifier(self, model: keras.Model | None = None) -> Classifier:
        """A Classifier around ``model`` (default: a fresh build) with this preprocessing."""
        model = self.build() if model is None else model
        shape = None if self.declared_shape else self.input_shape
        return Classifier(model, preprocessing=self.preprocessing, input_shape=shape)


def calibrate_head(model: keras.Model, x: np.ndarray | tf.Tensor, scale: float = 2.0) -> None:
    """Scale the final Dense layer's kernel and bias so that its pre-activation outputs on x
    (model-input units) have standard deviation ``scale``, as a trained model's logits might."""
    head = model.layers[-1]
    features = keras.Model(model.inputs, head.input)(tf.convert_to_tensor(x)).numpy()
    kernel, bias = head.get_weights()
    factor = scale / float(np.std(features @ kernel + bias))
    head.set_weights([kernel * factor, bias * factor])


def _calibrated(model: keras.Model, preprocessing: Preprocessing, size: int) -> keras.Model:
    """The model with BatchNorm statistics and logit scale set on crops of the photos."""
    x = preprocessing(tf.constant(photo_crops(size)))
    calibrate_batch_norm(model, x)
    if getattr(model, "inputs", None):  # functional: the head's input can be read
        calibrate_head(model, x)
    return model


def resnet50() -> keras.Model:
    """ResNet50 at 32x32 with its softmax head (``include_top``), the BGR flip inside; feed it
    ``Preprocessing(scale=255, mean=CAFFE_MEAN_RGB)``."""
    keras.utils.set_random_seed(50)
    image = keras.Input((32, 32, 3), name="image")
    model = keras.applications.ResNet50(
        weights=None, classes=CLASSES, input_tensor=ReverseChannels(name="rgb_to_bgr")(image)
    )
    return _calibrated(model, ZOO["resnet50"].preprocessing, 32)


def mobilenet_v2() -> keras.Model:
    """MobileNetV2 (alpha 0.35) at 64x64 with a logits head; expects pixels in [-1, 1]."""
    keras.utils.set_random_seed(2)
    model = keras.applications.MobileNetV2(
        weights=None,
        alpha=0.35,
        classes=CLASSES,
        input_shape=(64, 64, 3),
        classifier_activation=None,
    )
    return _calibrated(model, ZOO["mobilenet_v2"].preprocessing, 64)


def efficientnet_b0() -> keras.Model:
    """EfficientNetB0 at 32x32, logits head; its own preprocessing inside (Rescaling(1/255),
    Normalization), so it expects 0..255 pixels."""
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(
        weights=None, classes=CLASSES, input_shape=(32, 32, 3), classifier_activation=None
    )
    return _calibrated(model, ZOO["efficientnet_b0"].preprocessing, 32)


def convnext_tiny() -> keras.Model:
    """ConvNeXtTiny at 32x32 (its smallest size), logits head; its own Normalization inside
    (``include_preprocessing``), so it expects 0..255 pixels. LayerNorm only: only the head is
    calibrated."""
    keras.utils.set_random_seed(7)
    model = keras.applications.ConvNeXtTiny(
        weights=None,
        classes=CLASSES,
        input_shape=(32, 32, 3),
        classifier_activation=None,
        include_preprocessing=True,
    )
    calibrate_head(model, ZOO["convnext_tiny"].preprocessing(tf.constant(photo_crops(32))))
    return model


def fine_tuned() -> keras.Model:
    """The Keras transfer-learning recipe: Rescaling(1/127.5, offset=-1) (so 0..255 input), a
    frozen MobileNetV2 base (``include_top=False``) called as a NESTED functional model in
    inference mode, global pooling, dropout and a new dense head giving logits."""
    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, include_top=False, input_shape=(64, 64, 3)
    )
    calibrate_batch_norm(base, photo_crops(64) * 2 - 1)
    base.trainable = False
    image = keras.Input((64, 64, 3), name="image")
    features = base(keras.layers.Rescaling(1 / 127.5, offset=-1, name="to_unit")(image))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    logits = keras.layers.Dense(CLASSES, name="head")(keras.layers.Dropout(0.2)(pooled))
    model = keras.Model(image, logits, name="fine_tuned")
    calibrate_head(model, photo_crops(64) * 255)
    return model


def subclassed() -> keras.Model:
    """:class:`TinyResNet` at 32x32, built by one call and calibrated."""
    keras.utils.set_random_seed(4)
    model = TinyResNet()
    return _calibrated(model, ZOO["subclassed"].preprocessing, 32)


ZOO: dict[str, ZooModel] = {
    spec.name: spec
    for spec in (
        ZooModel(
            "resnet50",
            32,
            resnet50,
            Preprocessing(scale=255, mean=CAFFE_MEAN_RGB),
            "conv5_block3_3_conv",
            guided=True,
        ),
        ZooModel(
            "mobilenet_v2", 64, mobilenet_v2, Preprocessing(scale=2, offset=-1), "Conv_1", True
        ),
        ZooModel(
            "efficientnet_b0", 32, efficientnet_b0, Preprocessing(scale=255), "top_conv", False
        ),
        ZooModel(
            "convnext_tiny",
            32,
            convnext_tiny,
            Preprocessing(scale=255),
            "convnext_tiny_stage_3_block_2_depthwise_conv",
            guided=False,
        ),
        ZooModel("fine_tuned", 64, fine_tuned, Preprocessing(scale=255), "Conv_1", True),
        ZooModel(
            "subclassed",
            32,
            subclassed,
            Preprocessing(mean=0.5, std=0.25),
            "block_conv",
            guided=True,
            declared_shape=False,
        ),
    )
}
