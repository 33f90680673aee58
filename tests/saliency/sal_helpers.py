"""Models with known answers for the saliency tests."""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from robustkit.models import Classifier

CORNER = 4  # the class of a corner image depends on its top-left CORNER x CORNER pixels
CORNER_SIZE = 12


def analytic_function(v: np.ndarray) -> np.ndarray:
    """f(x, y, z) = 5x + y² + sin z on the last axis (NumPy reference)."""
    return 5 * v[..., 0] + v[..., 1] ** 2 + np.sin(v[..., 2])


def analytic_classifier() -> Classifier:
    """Images [N, 1, 1, 3] = (x, y, z) -> logits [f, -f] with f = 5x + y² + sin z."""

    def logits(images: tf.Tensor, training: bool = False) -> tf.Tensor:
        v = tf.reshape(images, (-1, 3))
        f = 5 * v[:, 0] + v[:, 1] ** 2 + tf.sin(v[:, 2])
        return tf.stack([f, -f], axis=1)

    return Classifier(logits, input_shape=(1, 1, 3), output="logits", bounds=(-4.0, 4.0))


def linear_model(weights: np.ndarray, bias: np.ndarray, shape: tuple[int, int, int]) -> keras.Model:
    """Flatten + Dense with weights [D, K] and bias [K]; outputs logits."""
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(weights.shape[1])]
    )
    model.layers[-1].set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def corner_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 12, 12, 1] of noise in [0, 0.5] whose top-left 4x4 corner is bright (0.9..1,
    class 1) or noise like the rest (class 0); half of each."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.5, (n, CORNER_SIZE, CORNER_SIZE, 1)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, :CORNER, :CORNER] = rng.uniform(0.9, 1.0, (int(y.sum()), CORNER, CORNER, 1))
    return x, y


@functools.cache
def trained_corner_cnn() -> keras.Model:
    """A small CNN (two convolutions, global average pooling, dense logits) trained in about
    2 s to tell bright-corner images from the rest; 100% accurate on fresh images."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((CORNER_SIZE, CORNER_SIZE, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, name="logits"),
        ]
    )
    x, y = corner_images(512, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    return model
