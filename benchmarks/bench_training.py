"""Adversarial training benchmarks on real MNIST digits (the shipped test set).

Subcommands (run from the repository root):

    python benchmarks/bench_training.py overhead   # PGD-k step vs (k+1) compiled passes
    python benchmarks/bench_training.py robust     # strong evaluation of a trained model
    python benchmarks/bench_training.py fast       # the fast method with and without the guard

``robust`` evaluates ``examples/mnist_robust.keras`` (written by examples/train_robust_mnist.py)
on the 2,000 held-out digits 8000..9999 with Linf eps 0.3 PGD-100, step 0.01, 10 random
restarts. An example counts as robust when its clean image and every attacked image are right.
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
import numpy as np
import tensorflow as tf

from robustkit.attacks import FGSM, PGD
from robustkit.gradients import input_gradients
from robustkit.models import Classifier, load_classifier
from robustkit.training import AdversarialTrainer, eps_ramp

ROOT = Path(__file__).resolve().parent.parent
EPS = 0.3


def example_module():
    """examples/train_robust_mnist.py as a module (its model, data split and schedules)."""
    spec = importlib.util.spec_from_file_location(
        "train_robust_mnist", ROOT / "examples" / "train_robust_mnist.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def robust_accuracy(classifier: Classifier, x: np.ndarray, y: np.ndarray, attack: PGD) -> dict:
    """Clean and robust accuracy (clean and attacked both right) and the seconds it took."""
    started = time.perf_counter()
    result = attack(classifier, x, y, batch_size=500)
    clean = result.clean_pred == y
    return {
        "clean_accuracy": float(clean.mean()),
        "robust_accuracy": float((clean & (result.adv_pred == y)).mean()),
        "seconds": time.perf_counter() - started,
    }


def strong_attack() -> PGD:
    return PGD("linf", EPS, steps=100, step_size=0.01, restarts=10, seed=0)


def overhead(args: argparse.Namespace) -> None:
    """Time per PGD-k training step over (k+1) compiled forward+backward passes."""
    example = example_module()
    x_train, y_train, _, _ = example.mnist_split(args.mnist)
    batch = args.batch_size
    x, y = x_train[: batch * args.steps_per_fit], y_train[: batch * args.steps_per_fit]
    model = example.build_model()
    classifier = Classifier(model)
    optimizer = keras.optimizers.Adam(1e-4)
    attack = PGD("linf", EPS, steps=args.k, step_size=0.01)
    trainer = AdversarialTrainer(model, optimizer, attack, method="pgd")
    xb, yb = tf.constant(x[:batch]), tf.constant(y[:batch].astype(np.int32))

    @tf.function
    def input_pass(images, labels):
        return input_gradients(classifier, images, labels).gradient

    @tf.function
    def weight_pass(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        return tape.gradient(loss, model.trainable_variables)

    def time_of(function, repeats: int = 20) -> float:
        function(xb, yb)
        started = time.perf_counter()
        for _ in range(repeats):
            outputs = function(xb, yb)
        tf.nest.map_structure(lambda t: t.numpy(), outputs)
        return (time.perf_counter() - started) / repeats

    trainer.fit((x, y), 1, batch_size=batch)  # trace and warm up
    rounds = []
    for _ in range(args.rounds):  # interleaved, so machine load hits all alike
        started = time.perf_counter()
        trainer.fit((x, y), 1, batch_size=batch)
        step = (time.perf_counter() - started) / args.steps_per_fit
        input_seconds, weight_seconds = time_of(input_pass), time_of(weight_pass)
        rounds.append(
            {
                "step_ms": 1e3 * step,
                "input_pass_ms": 1e3 * input_seconds,
                "weight_pass_ms": 1e3 * weight_seconds,
                "ratio_mixed": step / (args.k * input_seconds + weight_seconds),
                "ratio_weight": step / ((args.k + 1) * weight_seconds),
            }
        )
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(json.dumps({"k": args.k, "batch": batch, "rounds": rounds, "median": summary}, indent=1))


def robust(args: argparse.Namespace) -> None:
    """Strong held-out evaluation of a saved model."""
    example = example_module()
    _, _, x_held, y_held = example.mnist_split(args.mnist)
    classifier = load_classifier(args.model)
    print(json.dumps(robust_accuracy(classifier, x_held, y_held, strong_attack()), indent=1))


def fast(args: argparse.Namespace) -> None:
    """The fast method from scratch, with and without the guard, and plain FGSM (no random
    start), which overfits catastrophically; held-out accuracy under the strong attack.
    "Without the guard" runs it in monitor mode: it measures and records, but does not act."""
    example = example_module()
    x_all, y_all, x_held, y_held = example.mnist_split(args.mnist)
    train = example.shifted_batches(x_all, y_all, 128, shift=2, seed=0)
    steps = args.epochs * -(-len(x_all) // 128)
    runs = {
        "fgsm_rs_guard": (PGD("linf", EPS), "stop"),
        "fgsm_rs_no_guard": (PGD("linf", EPS), "monitor"),
        "fgsm_no_random_start_no_guard": (FGSM("linf", EPS), "monitor"),
    }
    report = {}
    for name, (attack, guard) in runs.items():
        if args.only and name != args.only:
            continue
        keras.utils.set_random_seed(0)
        model = example.build_model()
        optimizer = keras.optimizers.Adam(example.one_cycle(args.lr, steps))
        trainer = AdversarialTrainer(
            model,
            optimizer,
            attack,
            method="fast",
            eps_schedule=eps_ramp(EPS, args.ramp) if args.ramp else None,
            overfit_guard=guard,
            guard_size=512,
        )
        started = time.perf_counter()
        history = trainer.fit(train, args.epochs)
        seconds = time.perf_counter() - started
        held = robust_accuracy(Classifier(model), x_held, y_held, strong_attack())
        held["fgsm_accuracy"] = robust_accuracy(
            Classifier(model), x_held, y_held, FGSM("linf", EPS)
        )["robust_accuracy"]
        report[name] = {
            "train_seconds": seconds,
            "epochs_run": len(history.epoch),
            "stop_reason": history.stop_reason,
            "events": history.events,
            "guard_accuracy": history.history.get("guard_accuracy"),
            "train_adv_accuracy": history.history["adv_accuracy"],
            "held_out": held,
        }
        if args.save_dir:
            model.save(Path(args.save_dir) / f"mnist_{name}.keras")
        print(name, json.dumps(report[name]), flush=True)
    print(json.dumps(report, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("overhead", help=overhead.__doc__)
    timing.add_argument("--k", type=int, default=10)
    timing.add_argument("--batch-size", type=int, default=128)
    timing.add_argument("--steps-per-fit", type=int, default=20)
    timing.add_argument("--rounds", type=int, default=5)
    strong = commands.add_parser("robust", help=robust.__doc__)
    strong.add_argument("--model", default=str(ROOT / "examples" / "mnist_robust.keras"))
    quick = commands.add_parser("fast", help=fast.__doc__)
    quick.add_argument("--epochs", type=int, default=10)
    quick.add_argument("--lr", type=float, default=2e-3)
    quick.add_argument("--ramp", type=int, default=0, help="epochs of eps ramp-up (0: none)")
    quick.add_argument("--only", default=None, help="run only this variant")
    quick.add_argument("--save-dir", default=None, help="save each trained model here")
    args = parser.parse_args()
    {"overhead": overhead, "robust": robust, "fast": fast}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
