"""Small models with known weights for the core tests."""

from __future__ import annotations

import keras
import numpy as np


def linear_model(weights: np.ndarray, bias: np.ndarray, shape: tuple[int, int, int]) -> keras.Model:
    """Flatten + Dense with the given weights [D, K] and bias [K]; outputs logits."""
    model = keras.Sequential(
        [keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(weights.shape[1])]
    )
    model.layers[-1].set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def small_cnn(
    seed: int = 0, classes: int = 4, head: str | None = None, activation: str = "relu"
) -> keras.Model:
    """A tiny random CNN on 8x8x1 images; ``head`` optionally sets the last activation."""
    keras.utils.set_random_seed(seed)
    layers = [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation=activation),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, activation=head),
    ]
    return keras.Sequential(layers)


def stacked_conv_model() -> keras.Model:
    """Two stacked 3x3 convolutions on 8x8x1 and a 3-class head: its kernels reject an empty
    batch, so it catches any forward pass an early-stopping attack runs on no examples."""
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
