"""robustkit's suites against the reference AutoAttack on the same Keras model and digits.

For each setting (model, norm, eps) this runs, in one process and in turn: robustkit's
``standard`` suite (and ``quick`` with ``--quick``), then the reference AutoAttack "standard"
(fra31's budgets, built from torchattacks pieces on an exact PyTorch twin, in the benchmark
venv: see benchmarks/reference_autoattack.py). It prints robust accuracy, the per-example
disagreements (digits one side broke and the other did not) and wall times with their ratio,
and writes everything to ``--out`` as JSON.

    python benchmarks/bench_autoattack.py --peer-python /work/benchvenv/bin/python \\
        --setting examples/mnist_robust.keras linf 0.3 --count 500

``--attack square --queries 1000`` compares Square alone with the reference Square instead (both
with p_init 0.8 and p halving at fixed query counts, ``rescale_schedule=False``), and
``--attack apgd-ce`` APGD-CE alone (100 steps, one restart) with the reference's (torchattacks'
``APGD``, fra31's settings).
``--reference-json FILE`` (one per setting, in order) reuses a saved reference run instead of
running it again: accuracies compare exactly, but the time ratio then comes from two runs.
Digits are MNIST test digits ``--first`` .. ``--first + --count - 1`` (8000.. are held out from
the shipped models' training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from robustkit.attacks import APGD, APGDT, Square, is_robust
from robustkit.evaluation import evaluate
from robustkit.io import from_uint8, load_mnist
from robustkit.models import load_classifier
from robustkit.norms import make_norm

HERE = Path(__file__).resolve().parent


SINGLE_ATTACKS = {
    # the reference's settings: fra31's AutoAttack builds its Square with resc_schedule=False
    "square": lambda norm, eps, args: Square(
        norm, eps, queries=args.queries, p_init=0.8, rescale_schedule=False, seed=args.seed
    ),
    "apgd-ce": lambda norm, eps, args: APGD(norm, eps, steps=100, seed=args.seed),
    "apgd-t": lambda norm, eps, args: APGDT(norm, eps, steps=100, targets=9, seed=args.seed),
}


def digits(directory: str, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_mnist(directory)
    x = from_uint8(images[first : first + count, ..., None])
    return x, labels[first : first + count]


def ours(
    model: str, norm: str, eps: float, x: np.ndarray, y: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """robustkit on the digits: a suite through evaluate(), or one attack alone."""
    classifier = load_classifier(model)
    started = time.perf_counter()
    if args.attack in SINGLE_ATTACKS:
        attack = SINGLE_ATTACKS[args.attack](norm, eps, args)
        result = attack(classifier, x, y, batch_size=args.batch_size)
        robust = is_robust(result.clean_pred == y, result.adv_pred != y)
        seconds = time.perf_counter() - started
        name = f"square-{args.queries}" if args.attack == "square" else args.attack
        return {"robust_flags": robust.tolist(), "robust_accuracy": float(robust.mean()),
                "seconds": seconds, "suite": name}  # fmt: skip
    runs = {}
    for suite in ["standard", *(["quick"] if args.quick else [])]:
        started = time.perf_counter()
        report = evaluate(
            classifier, (x, y), make_norm(norm, eps), suite=suite, seed=args.seed,
            batch_size=args.batch_size, checks=None, per_example=True,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        runs[suite] = {
            "robust_flags": report.examples.robust[0].tolist(),
            "robust_accuracy": report.robust_accuracy[0],
            "clean_accuracy": report.clean_accuracy,
            "after_each_attack": {o.attack: o.robust_accuracy for o in report.outcomes},
            "seconds_per_attack": {o.attack: o.wall_time_s for o in report.outcomes},
            "verification": report.verification,
            "seconds": seconds,
            "suite": suite,
        }
    return runs


def reference(model: str, norm: str, eps: float, args: argparse.Namespace) -> dict[str, Any]:
    """The reference AutoAttack (or Square) in the peer venv, as a subprocess."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "reference.json"
        command = [
            args.peer_python, str(HERE / "reference_autoattack.py"), "--model", model,
            "--norm", norm, "--eps", str(eps), "--first", str(args.first),
            "--count", str(args.count), "--attacks", args.attack, "--queries", str(args.queries),
            "--seed", str(args.seed), "--mnist", args.mnist, "--out", str(out),
        ]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=HERE.parent)
        seconds = time.perf_counter() - started
        result = json.loads(out.read_text())
    result["process_seconds"] = seconds
    return result


def compare(name: str, mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Accuracy gap (points), per-example disagreements and the wall-time ratio."""
    robust = np.asarray(mine["robust_flags"])
    reference_robust = np.asarray(theirs["robust_flags"])
    row = {
        "robustkit": name,
        "robust_accuracy": mine["robust_accuracy"],
        "reference_robust_accuracy": theirs["robust_accuracy"],
        "gap_points": 100 * (mine["robust_accuracy"] - theirs["robust_accuracy"]),
        "only_reference_broke": int(np.sum(robust & ~reference_robust)),
        "only_robustkit_broke": int(np.sum(~robust & reference_robust)),
        "seconds": mine["seconds"],
        "reference_seconds": theirs["seconds"]["total"],
        "time_ratio": mine["seconds"] / theirs["seconds"]["total"],
        "after_each_attack": mine.get("after_each_attack"),
        "seconds_per_attack": mine.get("seconds_per_attack"),
    }
    print(
        f"  robustkit {name:<14} {100 * row['robust_accuracy']:6.2f}%  reference "
        f"{100 * row['reference_robust_accuracy']:6.2f}%  gap {row['gap_points']:+.2f} pts  "
        f"only reference broke {row['only_reference_broke']}, only robustkit broke "
        f"{row['only_robustkit_broke']}  time {row['seconds']:.0f}s vs "
        f"{row['reference_seconds']:.0f}s = {row['time_ratio']:.3f}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--setting", nargs=3, action="append", metavar=("MODEL", "NORM", "EPS"), required=True
    )
    parser.add_argument("--peer-python", help="python of the benchmark venv")
    parser.add_argument("--reference-json", action="append", help="a saved reference run")
    parser.add_argument("--mnist", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--first", type=int, default=8000)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--attack", choices=["standard", *SINGLE_ATTACKS], default="standard")
    parser.add_argument("--queries", type=int, default=5000, help="Square's queries")
    parser.add_argument("--quick", action="store_true", help="also robustkit's quick suite")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file for every figure")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, "
        f"Python {platform.python_version()}; digits {args.first}..{args.first + args.count - 1}",
        flush=True,
    )
    x, y = digits(args.mnist, args.first, args.count)
    rows = []
    for index, (model, norm, eps_text) in enumerate(args.setting):
        eps = float(eps_text)
        print(f"\n{model} {norm} eps {eps:g} ({args.attack})", flush=True)
        mine = ours(model, norm, eps, x, y, args)
        saved = args.reference_json[index] if args.reference_json else None
        theirs = json.loads(Path(saved).read_text()) if saved else reference(model, norm, eps, args)
        runs = {mine["suite"]: mine} if args.attack in SINGLE_ATTACKS else mine
        for name, run in runs.items():
            rows.append({"model": model, "norm": norm, "eps": eps, **compare(name, run, theirs)})
        rows[-1]["reference"] = {k: v for k, v in theirs.items() if k != "robust_flags"}
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
