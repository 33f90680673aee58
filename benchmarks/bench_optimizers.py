"""Training-step time on the MNIST CNN: Transformed(Adam) with clipping and noise vs plain Adam
(target <= 1.10x), with clipping only (the wrapper's own cost), and the DP-SGD step vs a plain
SGD step.

All four steps are compiled ``tf.function``s timed interleaved in one run: each round times a
few steps of every variant in turn, and ratios are medians of the per-round ratios, so that
machine load drifting during the run hits all variants alike.

Run from the repository root:  python benchmarks/bench_optimizers.py
(needs ../shared/data/mnist: the 10,000 real test digits)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from robustkit import optimizers as rko
from robustkit.io.mnist import load_mnist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from build_example_model import build_model  # the shipped example's CNN

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mnist_cnn() -> keras.Model:
    """The architecture of examples/build_example_model.py (225k weights), seeded."""
    keras.utils.set_random_seed(0)
    return build_model()


def plain_step(
    optimizer: keras.optimizers.Optimizer,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A compiled batch-gradient training step of a fresh CNN with ``optimizer``."""
    model = mnist_cnn()
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = LOSS(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per variant per round")
    parser.add_argument("--dp-steps", type=int, default=2, help="DP-SGD steps per round")
    args = parser.parse_args()

    digits, labels = load_mnist(args.mnist)
    images = tf.constant(digits[..., None].astype(np.float32) / 255)
    targets = tf.constant(labels.astype(np.int32))
    batches = [
        (images[i : i + args.batch], targets[i : i + args.batch])
        for i in range(0, len(digits) - args.batch + 1, args.batch)
    ]

    steps = {
        "adam": plain_step(keras.optimizers.Adam(1e-3)),
        "transformed_adam": plain_step(
            rko.clipped_noisy(keras.optimizers.Adam(1e-3), clip_norm=1.0, noise=0.01, seed=0)
        ),
        "clip_only_adam": plain_step(rko.clipped_noisy(keras.optimizers.Adam(1e-3), 1.0)),
        "sgd": plain_step(keras.optimizers.SGD(0.05)),
        "dp_sgd": rko.DPSGDStep(
            mnist_cnn(),
            LOSS,
            keras.optimizers.SGD(0.05),
            l2_norm_clip=1.0,
            noise_multiplier=1.1,
            seed=0,
        ),
    }
    counts = {name: args.dp_steps if name == "dp_sgd" else args.steps for name in steps}
    cursor = {name: 0 for name in steps}

    def run(name: str, count: int) -> tuple[float, float]:
        """Wall and process-CPU seconds per step over ``count`` steps on the next batches."""
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            x, y = batches[cursor[name] % len(batches)]
            cursor[name] += 1
            steps[name](x, y).numpy()
        return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count

    for name in steps:  # trace and warm up
        run(name, 3)
    # CPU time (all threads of this process) is what a step costs; wall time also counts the
    # waits for cores that other processes hold on a shared machine.
    per_step: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for round_index in range(args.rounds):
        shift = round_index % len(steps)
        order = list(steps)[shift:] + list(steps)[:shift]
        for name in order:
            per_step[name].append(run(name, counts[name]))

    def ratio(numerator: str, denominator: str, clock: int) -> str:
        """Median (and quartiles) over rounds of the step-time ratio; clock 0 wall, 1 CPU."""
        ratios = [
            a[clock] / b[clock]
            for a, b in zip(per_step[numerator], per_step[denominator], strict=True)
        ]
        low, median, high = statistics.quantiles(ratios, n=4)
        return f"{median:.3f}x (IQR {low:.3f}-{high:.3f})"

    gpus = len(tf.config.list_physical_devices("GPU"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {gpus} GPUs, "
        f"TF {tf.__version__}, Keras {keras.__version__}"
    )
    print(
        f"MNIST CNN, batch {args.batch}, {args.rounds} interleaved rounds "
        f"({args.steps} steps, DP-SGD {args.dp_steps} steps, per variant per round)"
    )
    for name, times in per_step.items():
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        print(f"  {name:17s} median step {1000 * wall:7.1f} ms wall, {1000 * cpu:7.1f} ms CPU")
    for label, numerator, denominator in (
        ("Transformed(Adam) clip+noise / Adam", "transformed_adam", "adam"),
        ("Transformed(Adam) clip only / Adam ", "clip_only_adam", "adam"),
        ("DP-SGD step / plain SGD step       ", "dp_sgd", "sgd"),
    ):
        print(
            f"{label}: wall {ratio(numerator, denominator, 0)}, "
            f"CPU {ratio(numerator, denominator, 1)}"
        )
    print("target: Transformed(Adam) / Adam <= 1.10x")


if __name__ == "__main__":
    main()
