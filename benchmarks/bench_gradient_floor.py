"""The per-pass floor under issue 11's cost target: TensorFlow's compiled input gradient and
forward pass against PyTorch's on the exact twin of the same Keras model, same CPU, one process.

The reference AutoAttack spends its time in forward+backward passes (APGD, APGD-T, FAB-T) and
forward passes (Square) of the twin; robustkit's ``standard`` suite in the same passes of the
Keras model. On the examples still robust at the end, the suite's definition fixes the number
of passes on both sides (100 steps x 9 targets, 5,000 queries: no early stop can save any), so
there robustkit's wall time over the reference's cannot fall below the ratio of one pass here.

For each model and batch size, in interleaved rounds (``bench_saliency.interleaved``): one
compiled ``robustkit.gradients.input_gradients`` of the summed cross-entropy (as APGD-CE takes
it) against ``torch.autograd.grad`` of the same loss through the twin (as torchattacks' APGD
does), and one compiled forward pass against the twin's under ``torch.no_grad`` (as Square
queries). Prints ms per batch and TensorFlow / PyTorch, median over rounds, wall and CPU.

Needs TensorFlow and torch in one venv: the benchmark venv of reference_autoattack.py plus
robustkit's own dependency colorcet (``/work/benchvenv/bin/pip install colorcet``). Run from
the repository root:

    PYTHONPATH=. /work/benchvenv/bin/python benchmarks/bench_gradient_floor.py \\
        --json benchmarks/results/gradient_floor.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as reference_autoattack.py runs torch

import keras
import numpy as np
import tensorflow as tf
import torch
import torch.nn.functional as F
from bench_saliency import interleaved, ratios, rgb_cnn
from torch_twin import check_twin, load_keras, load_mnist_test, twin_from_model

from robustkit.gradients import input_gradients
from robustkit.models import Classifier

# The models share one architecture (mnist_fgsm_rs_overfit.keras is mnist_robust's), so
# the other shapes: the shipped undefended CNN and bench_saliency's RGB CNN (64x64x3, seeded).
MODELS = ("examples/mnist_robust.keras", "examples/mnist_cnn.keras", "rgb_cnn")
BATCHES = (500, 100, 20)
FIRST_DIGIT = 8000  # held-out MNIST test digits 8000..
WORK = 2000  # images per timed run: passes = WORK // batch


def tensorflow_passes(model: keras.Model, x: np.ndarray, y: np.ndarray, passes: int):
    """(gradient run, forward run) of ``passes`` compiled passes on the batch."""
    classifier = Classifier(model, bounds=(0.0, 1.0))
    images, labels = tf.constant(x), tf.constant(y)
    gradient = tf.function(lambda a, b: input_gradients(classifier, a, b, loss="ce").gradient)
    forward = tf.function(classifier.logits)

    def gradient_run() -> None:
        for _ in range(passes):
            result = gradient(images, labels)
        result.numpy()

    def forward_run() -> None:
        for _ in range(passes):
            result = forward(images)
        result.numpy()

    return gradient_run, forward_run


def torch_passes(twin: torch.nn.Module, x: np.ndarray, y: np.ndarray, passes: int):
    """The same two runs through the twin (NCHW), as torchattacks takes the gradient."""
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(y.astype(np.int64))

    def gradient_run() -> None:
        for _ in range(passes):
            point = images.clone().requires_grad_(True)
            loss = F.cross_entropy(twin(point), labels, reduction="sum")
            torch.autograd.grad(loss, [point])[0].detach()

    def forward_run() -> None:
        with torch.no_grad():
            for _ in range(passes):
                twin(images)

    return gradient_run, forward_run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--json", help="write every figure to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    digits, labels = load_mnist_test(args.mnist, FIRST_DIGIT, max(args.batches))
    rows = []
    for path in args.models:
        if path == "rgb_cnn":  # uniform noise images: a pass costs the same whatever they show
            model = rgb_cnn()
            images = np.random.default_rng(0).random((len(digits), 64, 64, 3), np.float32)
        else:
            model, images = load_keras(path), digits
        twin = twin_from_model(model).eval()
        check = check_twin(model, twin, images).max_abs_diff
        for batch in args.batches:
            x, y = images[:batch], labels[:batch].astype(np.int32)
            passes = max(WORK // batch, 1)
            tf_gradient, tf_forward = tensorflow_passes(model, x, y, passes)
            pt_gradient, pt_forward = torch_passes(twin, x, y, passes)
            runs: dict[str, Callable[[], None]] = {
                "tf_gradient": tf_gradient,
                "torch_gradient": pt_gradient,
                "tf_forward": tf_forward,
                "torch_forward": pt_forward,
            }
            times = interleaved(runs, args.rounds)
            row = {"model": path, "batch": batch, "passes": passes, "max_logit_diff": check}
            for name, measured in times.items():
                row[f"{name}_ms"] = 1000 * statistics.median(w for w, _ in measured) / passes
            for kind in ("gradient", "forward"):
                tf_times, pt_times = times[f"tf_{kind}"], times[f"torch_{kind}"]
                row[f"{kind}_tf_over_torch_wall"] = statistics.median(ratios(tf_times, pt_times, 0))
                row[f"{kind}_tf_over_torch_cpu"] = statistics.median(ratios(tf_times, pt_times, 1))
            rows.append(row)
            line = f"{path:28s} batch {batch:4d}"
            for kind in ("gradient", "forward"):
                line += (
                    f" | {kind} TF {row[f'tf_{kind}_ms']:7.2f} ms, torch "
                    f"{row[f'torch_{kind}_ms']:7.2f} ms, TF/torch "
                    f"{row[f'{kind}_tf_over_torch_wall']:.2f} wall "
                    f"{row[f'{kind}_tf_over_torch_cpu']:.2f} CPU"
                )
            print(line, flush=True)
    if args.json:
        report = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "versions": {"tensorflow": tf.__version__, "torch": torch.__version__},
            "command": " ".join(sys.argv),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "rows": rows,
        }
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
