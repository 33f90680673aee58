"""Integrated Gradients on the MNIST CNN: speed against the compiled forward+backward limit, and
peak tensor memory as the number of steps grows at a fixed internal batch size.

Speed: IG with S steps needs S forward+backward passes per image. The limit is S compiled passes
of ``input_gradients`` on a batch of ``internal_batch_size`` images, so
limit images/s = batch / (S * seconds per pass). Limit and IG runs do the same number of
passes, are interleaved and repeated so that load from other processes on the machine hits both
alike; the median ratio is reported. SmoothGrad (S samples) is measured the same way.

Memory: peak bytes held by TensorFlow's CPU allocator during one IG call (reset before each),
for 50 to 400 steps in chunks of ``internal_batch_size``, and, for contrast, with everything in
one chunk (internal_batch_size = images x steps).

Run from the repository root:  python benchmarks/bench_saliency.py
(uses examples/mnist_cnn.keras and the real digits in ../shared/data/mnist)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from robustkit.gradients import InputGradients, input_gradients
from robustkit.io.mnist import load_mnist
from robustkit.models import load_classifier
from robustkit.saliency import integrated_gradients, smoothgrad

DEVICE = "CPU:0"


def rgb_cnn(size: int = 64) -> keras.Model:
    """A small RGB CNN on [size, size, 3] images, seeded weights: three 3x3 convolutions (16, 32,
    64 channels, the last named last_conv) each with 2x2 max pooling, a dense layer of 64 and a
    10-logit head."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu", name="last_conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="rgb_cnn",
    )


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of function()."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_mib(function) -> float:
    """Peak MiB held by TensorFlow's CPU allocator while function() runs."""
    tf.config.experimental.reset_memory_stats(DEVICE)
    function()
    return tf.config.experimental.get_memory_info(DEVICE)["peak"] / 2**20


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each run in ``repeats`` interleaved rounds.

    Every run is called once first (tracing, caches), then each round calls all of them, in the
    given order on even rounds and reversed on odd ones, so that load from other processes on
    the machine hits all runs alike.
    """
    for run in runs.values():
        run()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for repeat in range(repeats):
        order = list(runs) if repeat % 2 == 0 else list(runs)[::-1]
        for name in order:
            times[name].append(timed(runs[name]))
    return times


def compiled_limit(
    classifier,
    batch: tf.Tensor,
    targets: tf.Tensor,
    passes: int,
    backward: bool,
    taped: Callable[..., InputGradients] = input_gradients,
) -> Callable[[], None]:
    """``passes`` compiled forward passes (``backward``: forward+backward, ``taped`` gradients
    of the logit: ``input_gradients`` or ``guided_input_gradients``) on ``batch``: the least
    work a method doing that many passes can do."""
    if backward:
        step = tf.function(lambda a, b: taped(classifier, a, b, loss="logit").gradient)
    else:
        step = tf.function(lambda a, b: classifier.logits(a))

    def limit() -> None:
        for _ in range(passes):
            step(batch, targets).numpy()

    return limit


def ratios(first: list[tuple[float, float]], second: list[tuple[float, float]], index: int):
    """Per-round ratios first / second of the wall (index 0) or CPU (index 1) seconds."""
    return [a[index] / b[index] for a, b in zip(first, second, strict=True)]


def speed(classifier, pool: np.ndarray, images: int, steps: int, chunk: int, repeats: int) -> None:
    """Print IG and SmoothGrad images/s against the limit.

    Each repeat times the limit on exactly the work of one run (images x steps / chunk passes
    on a batch of ``chunk``), then IG, then SmoothGrad, alternating the order between repeats;
    the ratio of a repeat is limit seconds / method seconds, by the wall clock and by this
    process's CPU time (which other processes competing for the cores disturb less).
    """
    x = pool[:images]
    batch = tf.constant(pool[:chunk])  # the limit's batch has exactly ``chunk`` images
    targets = tf.constant(classifier.predict_logits(batch).argmax(axis=1).astype(np.int32))
    runs = {
        "limit": compiled_limit(classifier, batch, targets, len(x) * steps // chunk, True),
        "IG": lambda: integrated_gradients(classifier, x, steps=steps, internal_batch_size=chunk),
        "SmoothGrad": lambda: smoothgrad(classifier, x, samples=steps, internal_batch_size=chunk),
    }
    times = interleaved(runs, repeats)
    limit_rate = len(x) / statistics.median(wall for wall, _ in times["limit"])
    print(
        f"internal_batch_size {chunk}: limit ({steps} x compiled fwd+bwd at batch {chunk}) "
        f"{limit_rate:6.1f} images/s (wall)"
    )
    for name in ("IG", "SmoothGrad"):
        rate = len(x) / statistics.median(wall for wall, _ in times[name])
        for clock, index in (("wall", 0), ("CPU", 1)):
            per_round = ratios(times["limit"], times[name], index)
            print(
                f"  {name:10s} {rate:6.1f} images/s; ratio to limit by {clock:4s} time: median "
                f"{statistics.median(per_round):.3f} (repeats "
                + " ".join(f"{r:.3f}" for r in per_round)
                + ")"
            )


def memory(classifier, x: np.ndarray, chunk: int, steps_list: list[int]) -> None:
    """Print allocator peaks for IG with a growing number of steps."""
    integrated_gradients(classifier, x[:2], steps=2, internal_batch_size=chunk)  # trace
    print(f"peak TensorFlow CPU memory, IG on {len(x)} images:")
    chunked, whole = [], []
    for steps in steps_list:
        chunked.append(
            peak_mib(
                lambda s=steps: integrated_gradients(
                    classifier, x, steps=s, internal_batch_size=chunk
                )
            )
        )
        whole.append(
            peak_mib(
                lambda s=steps: integrated_gradients(
                    classifier, x, steps=s, internal_batch_size=len(x) * s
                )
            )
        )
        print(
            f"  steps {steps:4d}: internal_batch_size {chunk} -> {chunked[-1]:7.1f} MiB; "
            f"one chunk of {len(x) * steps:5d} -> {whole[-1]:7.1f} MiB"
        )
    print(
        f"  growth {steps_list[0]} -> {steps_list[-1]} steps: chunked "
        f"x{chunked[-1] / chunked[0]:.2f}, one chunk x{whole[-1] / whole[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="examples/mnist_cnn.keras")
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--images", type=int, default=128, help="images per speed run")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-images", type=int, default=16)
    args = parser.parse_args()

    classifier = load_classifier(args.model)
    digits, _ = load_mnist(args.mnist)
    x = (digits[..., None].astype(np.float32) / 255)[-2000:]  # held-out digits
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}; {args.images} held-out MNIST digits, {args.steps} steps/samples"
    )
    for chunk in (64, 256):
        speed(classifier, x, args.images, args.steps, chunk, args.repeats)
    memory(classifier, x[: args.memory_images], 64, [50, 100, 200, 400])


if __name__ == "__main__":
    main()
