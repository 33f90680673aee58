"""The evaluator on MNIST: honest (undefended model at Linf 0.3 ≈ 0) and fast (the standard
suite's cascade against every attack at full budget on every example).

Run from the repository root:  python benchmarks/bench_evaluation.py
(needs examples/mnist_cnn.keras and ../shared/data/mnist; digits 8000.. are held out from the
model's training). With ``--overfit-model M.keras`` it also compares, for a model trained with
fast FGSM-RS that overfit catastrophically, a weak PGD-10 (step eps/10 from the clean image, as
many training logs use) on training digits (0..7999) with the standard suite on held-out digits,
and prints the sanity checks of both evaluations.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

from robustkit.attacks import FGSM, PGD
from robustkit.evaluation import RobustnessReport, SuiteAttack, evaluate, standard_suite
from robustkit.io import from_uint8, load_mnist
from robustkit.models import Classifier, load_classifier
from robustkit.norms import Linf

HELD_OUT = 8000  # MNIST test digits 8000..9999 were not used to train the example models
TARGET_EPS = 0.3


def mnist(directory: str) -> tuple[np.ndarray, np.ndarray]:
    digits, labels = load_mnist(directory)
    return from_uint8(digits[..., None]), labels


def full_budget_run(
    classifier: Classifier, x: np.ndarray, y: np.ndarray, batch: int
) -> tuple[int, int, float]:
    """Every standard-suite attack at Linf 0.3 on every example, never stopping early.

    Returns (gradient evaluations, forward evaluations, seconds).
    """
    correct = classifier.predict_logits(x, batch).argmax(1) == y
    x, y = x[correct], y[correct]
    gradient = forward = 0
    start = time.perf_counter()
    for spec in standard_suite():
        attack = SuiteAttack(spec.name, spec.factory, {**spec.options, "early_stop": False}).build(
            Linf(TARGET_EPS)
        )
        result = attack(classifier, x, y, batch_size=batch)
        if spec.gradient_free:
            forward += result.gradient_steps
        else:
            gradient += result.gradient_steps
    return gradient, forward, time.perf_counter() - start


def summary(report: RobustnessReport) -> str:
    accuracy = ", ".join(
        f"eps {eps:g}: {acc:.2%}"
        for eps, acc in zip(report.epsilons, report.robust_accuracy, strict=True)
    )
    return f"clean {report.clean_accuracy:.2%}; worst case {accuracy}"


def print_checks(report: RobustnessReport) -> None:
    for check in report.checks:
        print(f"  check {check.number} {check.name:<15} {check.verdict:<8} {check.explanation}")


def honest_and_fast(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> None:
    classifier = load_classifier(args.model)
    x, y = x[HELD_OUT : HELD_OUT + args.images], y[HELD_OUT : HELD_OUT + args.images]
    print(f"model {args.model}; {len(x)} held-out digits; batch {args.batch}")

    start = time.perf_counter()
    target = evaluate(classifier, (x, y), Linf(TARGET_EPS), suite="standard", checks=None,
                      batch_size=args.batch)  # fmt: skip
    cascade_seconds = time.perf_counter() - start
    gradient, forward, full_seconds = full_budget_run(classifier, x, y, args.batch)
    cost = target.cost
    print(f"\nHONEST  standard suite, Linf {TARGET_EPS}: {summary(target)}")
    print(f"FAST    standard suite, Linf {TARGET_EPS}, cascade vs every attack at full budget:")
    print(
        f"  gradient evaluations {cost['gradient_evaluations']:>9,} vs {gradient:>9,} "
        f"(counted full budget {cost['full_budget_gradient_evaluations']:,}) "
        f"ratio {cost['gradient_evaluations'] / gradient:.4f}"
    )
    print(
        f"  forward evaluations  {cost['forward_evaluations']:>9,} vs {forward:>9,} "
        f"(counted full budget {cost['full_budget_forward_evaluations']:,}) "
        f"ratio {cost['forward_evaluations'] / forward:.4f}"
    )
    print(
        f"  wall time            {cascade_seconds:>8.1f}s vs {full_seconds:>8.1f}s "
        f"ratio {cascade_seconds / full_seconds:.4f}"
    )

    start = time.perf_counter()
    sweep = evaluate(classifier, (x, y), "linf", args.eps, suite="standard",
                     check_samples=args.check_samples, batch_size=args.batch)  # fmt: skip
    sweep_seconds = time.perf_counter() - start
    print(f"\nSWEEP   standard suite with all checks, Linf eps {args.eps}: {summary(sweep)}")
    for outcome in sweep.outcomes:
        print(
            f"  {outcome.attack:<13} eps {outcome.eps:<4g} attacked {outcome.attacked:>4} "
            f"broken {outcome.broken:>4} accuracy after {outcome.robust_accuracy:.2%} "
            f"grad {outcome.gradient_evaluations:>8,} fwd {outcome.forward_evaluations:>8,} "
            f"{outcome.wall_time_s:6.1f}s"
        )
    timing = sweep.timing
    print(
        f"  share of full budget {sweep.cost['share_of_full_budget']:.4f}; "
        f"wall {sweep_seconds:.1f}s (attacks {timing['attacks']:.1f}s, checks "
        f"{timing['checks']:.1f}s, subsample {sweep.settings['check_samples']} examples)"
    )
    print_checks(sweep)


def catastrophic_overfitting(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> None:
    """Weak PGD-10 on training digits vs the standard suite on held-out digits."""
    classifier = load_classifier(args.overfit_model)
    train_x, train_y = x[: args.images], y[: args.images]
    held_x, held_y = x[HELD_OUT : HELD_OUT + args.images], y[HELD_OUT : HELD_OUT + args.images]
    print(f"\nOVERFIT model {args.overfit_model}")
    weak = PGD("linf", TARGET_EPS, steps=10, step_size=TARGET_EPS / 10, random_start=False)
    for name, attack in (
        ("FGSM-RS (the training attack)", FGSM("linf", TARGET_EPS, random_start=True)),
        ("weak PGD-10", weak),
    ):
        logged = attack(classifier, train_x, train_y, batch_size=args.batch)
        print(
            f"  {name} on {len(train_x)} training digits: robust accuracy "
            f"{logged.robust_accuracy:.2%} (clean {logged.clean_accuracy:.2%})"
        )
    weak_report = evaluate(classifier, (held_x, held_y), Linf(TARGET_EPS), suite=[weak],
                           check_samples=args.check_samples, batch_size=args.batch)  # fmt: skip
    print(f"  PGD-10 alone as the suite on held-out digits: {summary(weak_report)}")
    print_checks(weak_report)
    strong = evaluate(classifier, (held_x, held_y), "linf", [0.1, 0.2, TARGET_EPS],
                      suite="standard", check_samples=args.check_samples,
                      batch_size=args.batch)  # fmt: skip
    print(f"  standard suite on held-out digits: {summary(strong)}")
    print_checks(strong)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="examples/mnist_cnn.keras")
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--images", type=int, default=500, help="digits per evaluation")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--check-samples", type=int, default=100)
    parser.add_argument(
        "--overfit-model",
        help="a catastrophically overfit FGSM-RS model, e.g. examples/mnist_fgsm_rs_overfit.keras",
    )
    parser.add_argument("--skip-fast", action="store_true", help="only the overfitting part")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, "
        f"Python {platform.python_version()}"
    )
    x, y = mnist(args.mnist)
    if not args.skip_fast:
        honest_and_fast(args, x, y)
    if args.overfit_model:
        catastrophic_overfitting(args, x, y)


if __name__ == "__main__":
    main()
