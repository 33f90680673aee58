"""PGD-40 against the compiled forward+backward limit on several model shapes, CleverHans' PGD
side by side, the early-stopping speed-up, and peak memory over a 10,000-image run.

Run from the repository root:  python benchmarks/bench_pgd.py
(needs examples/mnist_cnn.keras, built by examples/build_example_model.py, and ../shared/data/mnist)

Shapes (``--shapes``):
- ``mnist_cnn``: the shipped example CNN (trained), 28x28x1, batch 250;
- ``dense_cnn``: Conv32-Conv64-MaxPool-Dense128 on 28x28x1 (dense-heavy, no pooling between the
  convolutions), batch 250, random weights (speed does not depend on them);
- ``mobilenet_v2``: keras.applications.MobileNetV2 at 96x96x3 (weights=None, BatchNorm in
  inference mode), batch 32, on the digits resized and replicated to RGB.

Per shape and round (rounds interleave every method, so machine load hits them alike):
the limit (the same number of compiled forward+backward passes w.r.t. the input as one full
run), robustkit's PGD at full budget, and CleverHans 4's ``projected_gradient_descent`` inside
one ``tf.function`` (when cleverhans is installed: a benchmark-only dependency). Medians of the
rounds. Early stopping is measured on the trained example model, where it can stop.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD
from robustkit.gradients import input_gradients
from robustkit.io.mnist import load_mnist
from robustkit.models import Classifier, load_classifier

STEPS, EPS, STEP_SIZE = 40, 0.3, 0.01


def rss_mib() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """High-water mark of resident memory of this process (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wall(function: Callable[[], object]) -> float:
    """Wall time of one call of function() (s)."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def dense_cnn() -> keras.Model:
    """The dense-heavy MNIST CNN of issue 12: Conv32-Conv64-MaxPool-Dense128."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def mobilenet_v2() -> keras.Model:
    """MobileNetV2 at 96x96x3, random weights, 10 logits (BatchNorm runs in inference mode)."""
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), weights=None, classes=10, classifier_activation=None
    )


def shapes(args: argparse.Namespace, digits: np.ndarray, labels: np.ndarray) -> dict:
    """name -> (classifier, images, labels, batch)."""
    x = (digits[..., None].astype(np.float32) / 255)[-2000:]  # held-out digits
    y = labels[-2000:].astype(np.int32)
    rgb = np.repeat(tf.image.resize(x[: args.rgb_images], (96, 96)).numpy(), 3, axis=-1)
    return {
        "mnist_cnn": (load_classifier(args.model), x[: args.images], y[: args.images], 250),
        "dense_cnn": (Classifier(dense_cnn()), x[: args.images], y[: args.images], 250),
        "mobilenet_v2": (
            Classifier(mobilenet_v2()),
            np.clip(rgb, 0.0, 1.0),
            y[: args.rgb_images],
            32,
        ),
    }


def cleverhans_pgd(classifier: Classifier) -> Callable | None:
    """CleverHans' PGD (same eps, step, steps, random start) as one tf.function, or None."""
    try:
        from cleverhans.tf2.attacks.projected_gradient_descent import (
            projected_gradient_descent,
        )
    except ImportError:
        return None

    @tf.function
    def attack(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return projected_gradient_descent(
            classifier.logits, x, EPS, STEP_SIZE, STEPS, np.inf, y=y, rand_init=True,
            clip_min=0.0, clip_max=1.0, sanity_checks=False,
        )  # fmt: skip

    return attack


def speed(name: str, classifier: Classifier, x: np.ndarray, y: np.ndarray, batch: int, rounds: int):
    """Print images/s of the limit, robustkit full budget and CleverHans, and the ratios."""
    first_x, first_y = tf.constant(x[:batch]), tf.constant(y[:batch])
    fwd_bwd = tf.function(lambda a, b: input_gradients(classifier, a, b).gradient)
    fwd_bwd(first_x, first_y).numpy()
    full = PGD("linf", EPS, steps=STEPS, step_size=STEP_SIZE, early_stop=False, seed=0)
    full(classifier, x[:batch], y[:batch], batch_size=batch)  # trace once
    peer = cleverhans_pgd(classifier)
    batches = [(tf.constant(x[i : i + batch]), tf.constant(y[i : i + batch])) for i in
               range(0, len(x), batch)]  # fmt: skip
    if peer is not None:
        peer(*batches[0]).numpy()
    passes = STEPS * len(batches)
    times: dict[str, list[float]] = {"limit": [], "robustkit": [], "cleverhans": []}
    for _ in range(rounds):
        times["limit"].append(wall(lambda: [fwd_bwd(first_x, first_y).numpy()
                                            for _ in range(passes)]))  # fmt: skip
        times["robustkit"].append(wall(lambda: full(classifier, x, y, batch_size=batch)))
        if peer is not None:
            times["cleverhans"].append(wall(lambda: [peer(a, b).numpy() for a, b in batches]))
    limit = len(x) / statistics.median(times["limit"])
    print(f"\n{name}: {len(x)} images, batch {batch}, PGD-{STEPS} Linf {EPS}, {rounds} rounds")
    print(f"  limit ({STEPS} x compiled fwd+bwd): {limit:8.1f} images/s")
    for method in ("robustkit", "cleverhans"):
        if times[method]:
            rate = len(x) / statistics.median(times[method])
            print(f"  {method:<10} full budget: {rate:8.1f} images/s  ratio {rate / limit:.3f}")


def early_stopping(classifier: Classifier, x: np.ndarray, y: np.ndarray, rounds: int) -> None:
    """Early stopping against full budget on the trained model, with the fixed step of the speed
    runs and with PGD's default step (2.5 eps / steps): speed-up and same success."""
    for step_size in (STEP_SIZE, None):
        options = {"steps": STEPS, "step_size": step_size, "seed": 0}
        full = PGD("linf", EPS, early_stop=False, **options)
        early = PGD("linf", EPS, early_stop=True, **options)
        results = {}
        times: dict[str, list[float]] = {"full": [], "early": []}
        for attack in (full, early):  # trace once
            attack(classifier, x[:250], y[:250], batch_size=250)
        for _ in range(rounds):
            for attack, key in ((full, "full"), (early, "early")):
                start = time.perf_counter()
                results[key] = attack(classifier, x, y, batch_size=250)
                times[key].append(time.perf_counter() - start)
        ratio = statistics.median(times["full"]) / statistics.median(times["early"])
        same = bool(np.array_equal(results["full"].success, results["early"].success))
        print(
            f"\nearly stopping on mnist_cnn, step {full.step_at(EPS):.4f}: speed-up {ratio:.2f}x "
            f"over full budget; success identical: {same}; gradient steps "
            f"{results['full'].gradient_steps} vs {results['early'].gradient_steps}"
        )


def memory(classifier: Classifier, digits: np.ndarray, count: int) -> None:
    """Stream ``count`` images through full-budget PGD 1,000 per call; peak RSS must stay flat."""
    full = PGD("linf", EPS, steps=STEPS, step_size=STEP_SIZE, early_stop=False, seed=0)
    x_memory = np.concatenate([digits[:8000], digits[-2000:]])[:count]
    x_memory = x_memory[..., None].astype(np.float32) / 255
    marks = []
    for begin in range(0, len(x_memory), 1000):
        full(classifier, x_memory[begin : begin + 1000], batch_size=250)
        marks.append((begin + 1000, rss_mib(), peak_rss_mib()))
    for done, current, peak in marks:
        print(f"after {done:5d} images: RSS {current:7.1f} MiB, peak RSS {peak:7.1f} MiB")
    print(f"peak RSS growth from 1,000 to {marks[-1][0]:,} images: "
          f"{marks[-1][2] - marks[0][2]:+.1f} MiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="examples/mnist_cnn.keras")
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--shapes", default="mnist_cnn,dense_cnn,mobilenet_v2")
    parser.add_argument("--images", type=int, default=1000, help="digits for the MNIST shapes")
    parser.add_argument("--rgb-images", type=int, default=128, help="images for MobileNetV2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-images", type=int, default=10000, help="0 skips the run")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}")
    digits, labels = load_mnist(args.mnist)
    models = shapes(args, digits, labels)
    for name in args.shapes.split(","):
        speed(name, *models[name], args.rounds)
    classifier, x, y, _ = models["mnist_cnn"]
    early_stopping(classifier, x, y, args.rounds)
    if args.memory_images:
        memory(classifier, digits, args.memory_images)


if __name__ == "__main__":
    main()
