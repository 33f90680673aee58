"""The fast method and its two cures for catastrophic overfitting on real MNIST digits.

Trains the example CNN (examples/train_robust_mnist.py) from scratch with each fast variant for
the fast budget at Linf eps 0.3 on digits 0..7999 and evaluates it on the held-out digits
8000..9999 with ``robustkit.evaluation.evaluate(..., suite="standard")`` (AutoAttack's suite):

    fgsm-rs    FGSM with random start, step 1.25·eps (Wong et al. 2020)
    n-fgsm     noise U[-2·eps, 2·eps], step eps, no projection (de Jorge et al. 2022)
    gradalign  FGSM from the clean point, step eps, + λ·(1 - cos) of input gradients at x and
               x + δ (Andriushchenko & Flammarion 2020)

Reports clean and robust held-out accuracy, the training attack's accuracy per epoch (a
collapse shows catastrophic overfitting) and the training seconds per epoch (the step only:
no validation, no guard), as a median over the epochs after the first (which traces) and as a
ratio to FGSM-RS. Timings are only comparable on a quiet machine. ``--guard stop`` (or
``rollback``, or ``monitor``, which only records) turns the catastrophic-overfitting guard on
(default off): the report then adds the guard's accuracies and firings per epoch, the epochs run
and the wall time of the whole ``fit`` (the guard's two attacks per epoch included).

Run from the repository root, e.g. ``python benchmarks/bench_fast_methods.py --out
benchmarks/results/fast_methods.json``; a quick check of the script itself:
``--epochs 1 --train-count 256 --held-out 64 --width 8``. ``--deterministic`` turns on op
determinism (process-wide) to measure its cost against a run without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

from robustkit.attacks import FGSM, PGD
from robustkit.evaluation import evaluate
from robustkit.models import Classifier
from robustkit.norms import Linf
from robustkit.training import NFGSM, AdversarialTrainer

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("fgsm-rs", "n-fgsm", "gradalign")


def example_module():
    """examples/train_robust_mnist.py as a module (its model, data split and schedules)."""
    spec = importlib.util.spec_from_file_location(
        "train_robust_mnist", ROOT / "examples" / "train_robust_mnist.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def variant_options(name: str, eps: float, grad_align: float) -> dict:
    """The trainer's attack and options for one fast variant."""
    if name == "fgsm-rs":
        return {"attack": PGD("linf", eps)}  # the fast method runs FGSM-RS in its ball
    if name == "n-fgsm":
        return {"attack": PGD("linf", eps), "n_fgsm": NFGSM(noise=2.0, step=1.0)}
    return {"attack": FGSM("linf", eps), "grad_align": grad_align}


def epoch_seconds(seconds: list[float]) -> float:
    """Median training seconds per epoch, leaving out the first (tracing) when there are more."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def run_variant(name: str, args: argparse.Namespace, data: tuple) -> dict:
    """Train one variant from the same initial weights and evaluate it on the held-out digits."""
    example = example_module()
    x_train, y_train, x_held, y_held = data
    keras.utils.set_random_seed(args.seed)
    model = example.build_model(args.width)
    steps = args.epochs * -(-len(x_train) // args.batch_size)
    options = variant_options(name, args.eps, args.grad_align)
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.Adam(example.one_cycle(args.lr, steps)),
        options.pop("attack"),
        method="fast",
        overfit_guard=None if args.guard == "none" else args.guard,
        deterministic=args.deterministic,
        seed=args.seed,
        **options,
    )
    started = time.perf_counter()
    history = trainer.fit((x_train, y_train), args.epochs, batch_size=args.batch_size)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    checks = None if args.checks == "none" else args.checks
    report = evaluate(
        Classifier(model), (x_held, y_held), Linf(args.eps), suite=args.suite, checks=checks
    )
    guard = {
        key: history.history[key]
        for key in ("guard_accuracy", "guard_training_attack_accuracy", "guard_fired")
        if key in history.history
    }
    return {
        "epochs_run": len(history.history["seconds"]),
        "fit_seconds": fit_seconds,
        "guard_events": history.events,
        **guard,
        "seconds_per_epoch": epoch_seconds(history.history["seconds"]),
        "epoch_seconds": history.history["seconds"],
        "train_adv_accuracy": history.history["adv_accuracy"],
        "train_clean_accuracy": history.history["clean_accuracy"],
        "misalignment": history.history["misalignment"],
        "held_out_clean_accuracy": report.clean_accuracy,
        "held_out_robust_accuracy": report.robust_accuracy[0],
        "held_out_robust_accuracy_before_checks": report.robust_accuracy_before_checks[0],
        "evaluation_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--epochs", type=int, default=10, help="the fast budget")
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument(
        "--grad-align",
        type=float,
        default=0.2,
        help="GradAlign's λ (0.2: the paper's CIFAR-10 value at 8/255; tune it for MNIST 0.3)",
    )
    parser.add_argument("--lr", type=float, default=2e-3, help="peak of the one-cycle rate")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv")
    parser.add_argument("--train-count", type=int, default=8000, help="digits 0..N-1 train")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out digits evaluated")
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--checks", default="all", help='the evaluator\'s checks, or "none"')
    parser.add_argument("--guard", choices=("none", "stop", "rollback", "monitor"), default="none")
    parser.add_argument("--deterministic", action="store_true", help="op determinism on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON report here too")
    args = parser.parse_args()

    example = example_module()
    x_train, y_train, x_held, y_held = example.mnist_split(args.mnist)
    data = (
        x_train[: args.train_count],
        y_train[: args.train_count],
        x_held[: args.held_out],
        y_held[: args.held_out],
    )
    results = {}
    for name in args.variants:
        results[name] = run_variant(name, args, data)
        print(name, json.dumps(results[name]), file=sys.stderr, flush=True)
    if "fgsm-rs" in results:
        reference = results["fgsm-rs"]["seconds_per_epoch"]
        for result in results.values():
            result["cost_vs_fgsm_rs"] = result["seconds_per_epoch"] / reference
    report = {"settings": vars(args), "results": results}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
