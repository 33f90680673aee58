"""Small models, data and NumPy references for the training tests."""

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


def small_cnn(seed: int = 0, classes: int = 3, batch_norm: bool = False) -> keras.Model:
    """A tiny random CNN on 6x6x1 images (optionally with BatchNorm); outputs logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.Flatten(), keras.layers.Dense(classes)]
    return keras.Sequential(layers)


def blobs(n: int, seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 6, 6, 1] in [0, 1] whose class sets the brightness of one third of the rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.uniform(0.0, 0.3, size=(n, 6, 6, 1))
    for k in range(classes):
        x[y == k, 2 * k : 2 * k + 2] += 0.6
    return x.astype(np.float32), y


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example softmax cross-entropy of logits z [N, K] (float64 reference)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(y)), y]


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


def compare_runs(
    one: tuple[list[np.ndarray], dict], two: tuple[list[np.ndarray], dict], initial: list
) -> dict:
    """How two trainings (weights, history) differ: the largest weight difference, how far the
    first moved from ``initial`` (so a run that trained nothing cannot pass), and the largest
    difference of each logged metric but the timings."""
    (one_weights, one_history), (two_weights, two_history) = one, two
    return {
        "weight_difference": max(
            float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights, strict=True)
        ),
        "weight_change": max(
            float(np.max(np.abs(a - b))) for a, b in zip(one_weights, initial, strict=True)
        ),
        "metric_difference": {
            metric: float(np.max(np.abs(np.subtract(values, two_history[metric]))))
            for metric, values in one_history.items()
            if metric != "seconds"
        },
    }
