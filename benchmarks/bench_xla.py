"""Does XLA (``tf.function(jit_compile=True)``) make input gradients faster on this CPU (issue 13)?

The single-pass gradient methods (gradient, gradient x input, guided backpropagation) already run
at 0.82-0.92 of the compiled forward+backward limit (bench_saliency_peers.py), so beating twice
Xplique's speed would need a faster pass than that limit. This script times that pass, one
``input_gradients`` of the target logit on a batch, compiled the usual way (TensorFlow's graph
with oneDNN kernels) and with XLA, on three model shapes, in interleaved rounds (the helper of
bench_saliency.py), and prints ms per batch and the ratio XLA / plain by wall and CPU time
(median over rounds; above 1 means XLA is slower). The two gradients are compared too.

Models: examples/mnist_cnn.keras (28x28x1), the RGB CNN that bench_saliency_peers.py trains
(``bench_saliency.rgb_cnn``, 64x64x3, here with its untrained seeded weights: speed does not
depend on training) and MobileNetV2 at 64x64x3 (``weights=None``).
Run from the repository root:  python benchmarks/bench_xla.py
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from bench_saliency import interleaved, ratios, rgb_cnn

from robustkit.gradients import input_gradients
from robustkit.models import Classifier


def models() -> dict[str, Callable[[], keras.Model]]:
    """Name -> builder of each measured model."""
    return {
        "mnist_cnn": lambda: keras.saving.load_model("examples/mnist_cnn.keras"),
        "rgb_cnn": rgb_cnn,
        "mobilenetv2": lambda: keras.applications.MobileNetV2(
            input_shape=(64, 64, 3), weights=None, classes=10, classifier_activation=None
        ),
    }


def measure(model: keras.Model, batch: int, passes: int, rounds: int) -> dict[str, float]:
    """ms per batch (plain, XLA), the ratios XLA / plain and the largest gradient difference."""
    classifier = Classifier(model)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, *model.input_shape[1:]), dtype=np.float32))
    targets = tf.constant(rng.integers(0, 10, batch, dtype=np.int32))

    def gradient(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return input_gradients(classifier, a, b, loss="logit").gradient

    steps = {"plain": tf.function(gradient), "xla": tf.function(gradient, jit_compile=True)}

    def repeated(step: Callable) -> Callable[[], None]:
        def run() -> None:
            for _ in range(passes):
                step(x, targets).numpy()

        return run

    times = interleaved({name: repeated(step) for name, step in steps.items()}, rounds)
    difference = np.abs(steps["xla"](x, targets).numpy() - steps["plain"](x, targets).numpy())
    return {
        "plain_ms": 1e3 * statistics.median(wall for wall, _ in times["plain"]) / passes,
        "xla_ms": 1e3 * statistics.median(wall for wall, _ in times["xla"]) / passes,
        "xla_over_plain_wall": statistics.median(ratios(times["xla"], times["plain"], 0)),
        "xla_over_plain_cpu": statistics.median(ratios(times["xla"], times["plain"], 1)),
        "max_gradient_difference": float(difference.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per pass")
    parser.add_argument("--passes", type=int, default=20, help="passes per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, TensorFlow {tf.__version__}")
    print(f"# batch {args.batch}, {args.passes} passes per run, {args.rounds} rounds")
    print("| model | plain ms/batch | XLA ms/batch | XLA / plain (wall) | (CPU) | max diff |")
    print("|---|---|---|---|---|---|")
    for name, build in models().items():
        row = measure(build(), args.batch, args.passes, args.rounds)
        print(
            f"| {name} | {row['plain_ms']:.1f} | {row['xla_ms']:.1f} | "
            f"{row['xla_over_plain_wall']:.2f} | {row['xla_over_plain_cpu']:.2f} | "
            f"{row['max_gradient_difference']:.1e} |"
        )


if __name__ == "__main__":
    main()
