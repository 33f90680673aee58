"""Build the shipped example: a small MNIST CNN and 20 held-out sample digits.

Trains on the first 8,000 digits of the MNIST test set (the only MNIST files shipped with this
project, in ../shared/data/mnist), reports accuracy on the last 2,000 (held out), and writes:

- ``examples/mnist_cnn.keras``: input 28x28x1 floats in [0, 1], output 10 logits;
- ``examples/images/<digit>/mnist-test-<index>.png``: two held-out digits per class.

Run from the repository root: ``python examples/build_example_model.py`` (about a minute on
two CPU cores). Seeded, so a rebuild gives the same model up to TensorFlow's CPU kernels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from robustkit.io import load_mnist, write_png

TRAIN_COUNT = 8000  # digits 0..7999 train the model; 8000..9999 are held out
SAMPLES_PER_CLASS = 2
SEED = 0
HERE = Path(__file__).resolve().parent


def build_model() -> keras.Model:
    """conv32-pool-conv64-pool-dense128-dense10 (logits), about 225k weights."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(10, name="logits"),
        ],
        name="mnist_cnn",
    )


def shifted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image [N, 28, 28, 1] moved by up to 2 pixels in each direction (zero fill)."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    rows, cols = rng.integers(0, 5, size=(2, len(images)))
    return np.stack(
        [padded[i, r : r + 28, c : c + 28] for i, (r, c) in enumerate(zip(rows, cols, strict=True))]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    digits, labels = load_mnist(args.mnist)
    x = digits[..., None].astype(np.float32) / 255.0
    x_train, y_train = x[:TRAIN_COUNT], labels[:TRAIN_COUNT]
    x_held, y_held = x[TRAIN_COUNT:], labels[TRAIN_COUNT:]

    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(SEED)
    for epoch in range(args.epochs):
        model.optimizer.learning_rate.assign(1e-3 * 0.5 ** max(0, epoch - args.epochs // 2))
        model.fit(shifted(x_train, rng), y_train, batch_size=64, epochs=1, verbose=0)
        _, accuracy = model.evaluate(x_held, y_held, batch_size=500, verbose=0)
        print(f"epoch {epoch + 1}/{args.epochs}: held-out accuracy {accuracy:.4f}")
    shipped = build_model()  # uncompiled copy: the file holds no optimizer state (< 1 MB)
    shipped.set_weights(model.get_weights())
    shipped.save(HERE / "mnist_cnn.keras")
    print(f"held-out accuracy on MNIST test digits {TRAIN_COUNT}..9999: {accuracy:.2%}")

    images = HERE / "images"
    for digit in range(10):
        for index in np.flatnonzero(y_held == digit)[:SAMPLES_PER_CLASS]:
            number = TRAIN_COUNT + int(index)
            write_png(images / str(digit) / f"mnist-test-{number}.png", digits[number, :, :, None])
    print(f"wrote {HERE / 'mnist_cnn.keras'} and {10 * SAMPLES_PER_CLASS} digits under {images}")


if __name__ == "__main__":
    main()
