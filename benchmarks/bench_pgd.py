"""PGD-40 on the MNIST CNN: speed against the compiled forward+backward limit, early-stopping
speed-up and peak memory over a 10,000-image run.

Run from the repository root:  python benchmarks/bench_pgd.py
(needs examples/mnist_cnn.keras, built by examples/build_example_model.py, and ../shared/data/mnist)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD
from robustkit.gradients import input_gradients
from robustkit.io.mnist import load_mnist
from robustkit.models import load_classifier

STEPS, EPS, STEP_SIZE, BATCH = 40, 0.3, 0.01, 250


def rss_mib() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """High-water mark of resident memory of this process (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seconds(function, repeats: int) -> float:
    """Mean wall time of function() over repeats (s): totals compare fairly with one long run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="examples/mnist_cnn.keras")
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--images", type=int, default=1000, help="images for the speed runs")
    parser.add_argument("--memory-images", type=int, default=10000)
    args = parser.parse_args()

    classifier = load_classifier(args.model)
    digits, labels = load_mnist(args.mnist)
    x_all = (digits[..., None].astype(np.float32) / 255)[-2000:]  # held-out digits
    y_all = labels[-2000:].astype(np.int32)
    x, y = x_all[: args.images], y_all[: args.images]

    batch = tf.constant(x[:BATCH])
    batch_labels = tf.constant(y[:BATCH])
    fwd_bwd = tf.function(lambda a, b: input_gradients(classifier, a, b).gradient)
    fwd_bwd(batch, batch_labels).numpy()
    full = PGD("linf", EPS, steps=STEPS, step_size=STEP_SIZE, early_stop=False, seed=0)
    early = PGD("linf", EPS, steps=STEPS, step_size=STEP_SIZE, early_stop=True, seed=0)
    full(classifier, x[:BATCH], y[:BATCH], batch_size=BATCH)  # trace once
    early(classifier, x[:BATCH], y[:BATCH], batch_size=BATCH)

    limit_times, full_times, early_times = [], [], []
    for _ in range(3):  # interleaved so that machine load hits all three alike
        # The limit does the same amount of work as one full run: STEPS passes per batch.
        passes = STEPS * len(x) // BATCH
        limit_times.append(passes * seconds(lambda: fwd_bwd(batch, batch_labels).numpy(), passes))
        start = time.perf_counter()
        full_result = full(classifier, x, y, batch_size=BATCH)
        full_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        early_result = early(classifier, x, y, batch_size=BATCH)
        early_times.append(time.perf_counter() - start)
    limit_per_s = len(x) / statistics.median(limit_times)
    full_per_s = len(x) / statistics.median(full_times)
    early_per_s = len(x) / statistics.median(early_times)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}"
    )
    print(f"PGD-{STEPS} Linf eps={EPS} step={STEP_SIZE} batch={BATCH}, {len(x)} held-out digits")
    print(f"limit ({STEPS} x compiled fwd+bwd): {limit_per_s:8.1f} images/s")
    print(
        f"full budget:                     {full_per_s:8.1f} images/s  "
        f"ratio to limit {full_per_s / limit_per_s:.3f}"
    )
    print(
        f"early stopping:                  {early_per_s:8.1f} images/s  "
        f"speed-up {early_per_s / full_per_s:.2f}x"
    )
    print(
        f"robust accuracy full {full_result.robust_accuracy:.4f} vs early "
        f"{early_result.robust_accuracy:.4f}; success identical: "
        f"{bool(np.array_equal(full_result.success, early_result.success))}; "
        f"gradient steps {full_result.gradient_steps} vs {early_result.gradient_steps}"
    )

    # Memory: stream 10,000 images through full-budget PGD, keeping only per-image numbers.
    x_memory = np.concatenate([digits[:8000], digits[-2000:]])[: args.memory_images]
    x_memory = x_memory[..., None].astype(np.float32) / 255
    correct = 0
    marks = []
    for begin in range(0, len(x_memory), 1000):
        result = full(classifier, x_memory[begin : begin + 1000], batch_size=BATCH)
        correct += int((result.adv_pred == result.labels).sum())
        marks.append((begin + 1000, rss_mib(), peak_rss_mib()))
    for done, current, peak in marks:
        print(f"after {done:5d} images: RSS {current:7.1f} MiB, peak RSS {peak:7.1f} MiB")
    growth = marks[-1][2] - marks[0][2]
    print(
        f"peak RSS growth from 1,000 to {marks[-1][0]:,} images: {growth:+.1f} MiB "
        f"(model-predicted-label robust accuracy {correct / len(x_memory):.4f})"
    )


if __name__ == "__main__":
    main()
