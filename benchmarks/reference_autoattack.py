"""Reference AutoAttack ("standard", fra31/auto-attack's budgets) built from torchattacks pieces.

Benchmark-only tooling: robustkit never imports this, nor torch. It attacks the exact PyTorch
twin of a Keras model (benchmarks/torch_twin.py) and re-checks every adversarial with a fresh
forward pass of the Keras model itself, so its robust accuracy can be set against robustkit's.

Install the separate benchmark venv (torch 2.13.0 is a local CPU wheel; any other torch spec
would pull GBs of CUDA wheels):

    python -m venv /work/benchvenv
    /work/benchvenv/bin/pip install tensorflow numpy
    /work/benchvenv/bin/pip install torch==2.13.0
    /work/benchvenv/bin/pip install --no-deps torchattacks==3.5.1
    /work/benchvenv/bin/pip install scipy tqdm

torchattacks 3.5.1 declares torch, torchvision, scipy, tqdm, requests~=2.25.1 and numpy. Installed
with its dependencies it would replace torch by another (CUDA) build and add torchvision, which
does not import beside torch 2.13.0, hence --no-deps. No workaround is needed for torchvision:
torchattacks 3.5.1 never imports it (`import torchattacks` works and leaves it out of
sys.modules). scipy is imported when the package loads (TIFGSM, OnePixel), so it is installed;
tqdm is optional (LGV only); requests is not used by the attacks and is left as it is.

"standard" = the cascade APGD-CE, APGD-T, FAB-T, Square of fra31's AutoAttack.set_version
('standard') for Linf and L2, each attack run only on the points still robust, with:
  APGD-CE  APGD(loss='ce', steps=100, n_restarts=1, rho=.75, eot_iter=1)
  APGD-T   APGDT(steps=100, n_restarts=1, rho=.75, n_classes=10): fra31 uses 9 target classes
           (apgd_targeted.n_target_classes = 9); torchattacks derives n_classes - 1 = 9
  FAB-T    FAB(multi_targeted=True, steps=100, n_restarts=1, alpha_max=.1, eta=1.05, beta=.9,
           n_classes=10): fra31 uses 9 target classes (fab.n_target_classes = 9), here 10 - 1
  Square   Square(n_queries=5000, n_restarts=1, p_init=.8, loss='margin', resc_schedule=False);
           fra31 builds its SquareAttack with resc_schedule=False, so the same is done here
combined in torchattacks' MultiAttack, all with the same eps and norm ('Linf' / 'L2') and seed 0
(fra31 draws the seed from the clock unless given one). torchattacks' own AutoAttack is not used:
its 'standard' version keeps the default steps=10 for APGD, APGD-T and FAB.

Timings: torch runs with torch.set_num_threads(2) (--threads) and OMP_WAIT_POLICY=PASSIVE unless
the environment sets it; the JSON records the load averages, since other work on the machine
inflates wall time, and the process CPU time beside it.

    /work/benchvenv/bin/python benchmarks/reference_autoattack.py \
        --model examples/mnist_robust.keras --norm linf --eps 0.3 --out results.json

The per-attack robust accuracies come from wrappers around the attacks that MultiAttack calls
in turn: each records its time and which of the points it received it fooled (the same forward
pass and comparison that MultiAttack makes), which is exactly the cascade.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# torch's OpenMP threads otherwise spin at every barrier: when other processes load the cores,
# that spinning made the same attack 10-60x slower (wall and CPU) on a 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torchattacks
from torch_twin import (
    DEFAULT_MNIST,
    compare_logits,
    keras_logits,
    load_keras,
    load_mnist_test,
    twin_from_model,
)
from torchattacks import APGD, APGDT, FAB, MultiAttack, Square
from torchattacks.attack import Attack

ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
NORMS = {"linf": "Linf", "l2": "L2"}
N_CLASSES = 10
NORM_SLACK = 1e-5  # float32 round-off allowed on top of eps when re-checking perturbations


def attack_settings(name: str, steps: int, queries: int) -> dict[str, Any]:
    """Constructor keyword arguments (besides model, norm, eps, seed) of one attack."""
    if name == "apgd-ce":
        return {"steps": steps, "n_restarts": 1, "loss": "ce", "eot_iter": 1, "rho": 0.75}
    if name == "apgd-t":
        return {"steps": steps, "n_restarts": 1, "eot_iter": 1, "rho": 0.75, "n_classes": N_CLASSES}
    if name == "fab-t":
        return {
            "steps": steps,
            "n_restarts": 1,
            "alpha_max": 0.1,
            "eta": 1.05,
            "beta": 0.9,
            "multi_targeted": True,
            "n_classes": N_CLASSES,
        }
    if name == "square":
        return {
            "n_queries": queries,
            "n_restarts": 1,
            "p_init": 0.8,
            "loss": "margin",
            "resc_schedule": False,
        }
    raise ValueError(f"unknown attack {name!r}; choose from {ATTACKS}")


def build_attack(
    name: str, model: torch.nn.Module, norm: str, eps: float, seed: int, steps: int, queries: int
) -> Attack:
    """One torchattacks attack of the standard suite."""
    classes = {"apgd-ce": APGD, "apgd-t": APGDT, "fab-t": FAB, "square": Square}
    kwargs = attack_settings(name, steps, queries)
    return classes[name](model, norm=norm, eps=eps, seed=seed, verbose=False, **kwargs)


class CascadeLog:
    """Which examples of the current batch are still robust, by global index, per stage."""

    def __init__(self, n_examples: int, stages: list[str]) -> None:
        self.stages = stages
        self.alive = np.zeros(0, dtype=np.int64)
        self.broken_by: list[str | None] = [None] * n_examples
        self.inputs = dict.fromkeys(stages, 0)
        self.seconds = dict.fromkeys(stages, 0.0)
        self.cpu_seconds = dict.fromkeys(stages, 0.0)
        self.consistent = True

    def start_batch(self, indices: np.ndarray) -> None:
        """A new batch enters the cascade."""
        self.alive = np.asarray(indices, dtype=np.int64)

    def record(
        self, stage: str, still_correct: np.ndarray, seconds: float, cpu_seconds: float
    ) -> None:
        """Stage `stage` ran on the alive examples; keep those it did not fool."""
        self.seconds[stage] += seconds
        self.cpu_seconds[stage] += cpu_seconds
        if len(still_correct) != len(self.alive):
            self.consistent = False  # should never happen: MultiAttack passes the alive ones
            return
        self.inputs[stage] += len(self.alive)
        for index in self.alive[~still_correct]:
            self.broken_by[int(index)] = stage
        self.alive = self.alive[still_correct]


class CascadeStage(Attack):
    """Runs a wrapped attack, timing it and logging which inputs it fooled."""

    def __init__(self, stage: str, inner: Attack, log: CascadeLog) -> None:
        super().__init__(f"Stage[{stage}]", inner.model)
        self.stage, self.inner, self.log = stage, inner, log
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The wrapped attack's adversarials for `images`."""
        start, cpu_start = time.perf_counter(), time.process_time()
        adv = self.inner(images, labels)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        with torch.no_grad():
            _, pred = torch.max(self.get_logits(adv).data, 1)  # as MultiAttack decides
        still_correct = (pred == labels).cpu().numpy()
        self.log.record(self.stage, still_correct, seconds, cpu_seconds)
        print(
            f"  {self.stage}: {len(labels)} in, {int(still_correct.sum())} still correct, "
            f"{seconds:.1f} s ({cpu_seconds:.1f} s CPU)",
            file=sys.stderr,
            flush=True,
        )
        return adv


def perturbation_norms(adv: np.ndarray, clean: np.ndarray, norm: str) -> np.ndarray:
    """Per-example Linf or L2 size of adv - clean."""
    delta = (adv - clean).reshape(len(adv), -1).astype(np.float64)
    if norm == "Linf":
        return np.abs(delta).max(axis=1)
    return np.sqrt((delta**2).sum(axis=1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=".keras model (NHWC 28x28x1, logits)")
    parser.add_argument("--norm", choices=sorted(NORMS), default="linf")
    parser.add_argument("--eps", type=float, required=True)
    parser.add_argument("--first", type=int, default=8000, help="first MNIST test digit")
    parser.add_argument("--count", type=int, default=1000, help="number of digits")
    parser.add_argument(
        "--attacks",
        default="standard",
        help="'standard' (apgd-ce,apgd-t,fab-t,square) or a comma list of " + ",".join(ATTACKS),
    )
    parser.add_argument("--queries", type=int, default=5000, help="Square's query budget")
    parser.add_argument("--steps", type=int, default=100, help="APGD, APGD-T and FAB steps")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mnist", default=DEFAULT_MNIST, help="folder with the t10k files")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", help="JSON results path")
    args = parser.parse_args(argv)
    names = ATTACKS if args.attacks == "standard" else tuple(args.attacks.split(","))
    for name in names:
        attack_settings(name, args.steps, args.queries)  # validates the name
    args.attack_names = list(names)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate the model with the reference cascade; return the results record."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(args.threads)
    norm = NORMS[args.norm]

    keras_model = load_keras(args.model)
    twin = twin_from_model(keras_model)
    x, y = load_mnist_test(args.mnist, args.first, args.count)
    clean_check = compare_logits(keras_model, twin, x)
    clean_correct = keras_logits(keras_model, x).argmax(1) == y

    log = CascadeLog(len(y), args.attack_names)
    stages = [
        CascadeStage(
            name,
            build_attack(name, twin, norm, args.eps, args.seed, args.steps, args.queries),
            log,
        )
        for name in args.attack_names
    ]
    attack: Attack = MultiAttack(stages) if len(stages) > 1 else stages[0]

    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    adv_nchw = np.empty_like(x_nchw)
    t_attack = time.perf_counter()
    for start in range(0, len(y), args.batch_size):
        stop = min(start + args.batch_size, len(y))
        print(f"batch {start}:{stop}", file=sys.stderr, flush=True)
        log.start_batch(np.arange(start, stop))
        images = torch.from_numpy(x_nchw[start:stop])
        labels = torch.from_numpy(y[start:stop])
        adv_nchw[start:stop] = attack(images, labels).detach().cpu().numpy()
    attack_seconds = time.perf_counter() - t_attack

    # Fresh Keras forward pass on every final image (NCHW -> NHWC).
    adv = np.ascontiguousarray(adv_nchw.transpose(0, 2, 3, 1))
    adv_check = compare_logits(keras_model, twin, adv)
    keras_correct = keras_logits(keras_model, adv).argmax(1) == y
    twin_correct = np.array([b is None for b in log.broken_by]) & clean_correct
    sizes = perturbation_norms(adv, x, norm)
    norm_bad = sizes > args.eps + NORM_SLACK
    range_bad = (adv.reshape(len(adv), -1).min(1) < 0) | (adv.reshape(len(adv), -1).max(1) > 1)
    invalid = norm_bad | range_bad
    # An adversarial outside the threat model does not count as a success.
    robust = clean_correct & (keras_correct | invalid)

    n = len(y)
    cascade: list[dict[str, Any]] = []
    broken = np.zeros(n, dtype=bool)
    for name in args.attack_names:
        broken |= np.array([b == name for b in log.broken_by])
        keras_broken = broken & ~keras_correct & ~invalid
        cascade.append(
            {
                "attack": name,
                "settings": attack_settings(name, args.steps, args.queries),
                "inputs": log.inputs[name],
                "seconds": round(log.seconds[name], 3),
                "cpu_seconds": round(log.cpu_seconds[name], 3),
                "robust_accuracy": float(np.mean(clean_correct & ~keras_broken)),
                "robust_accuracy_twin": float(np.mean(clean_correct & ~broken)),
            }
        )
    return {
        "tool": "reference AutoAttack from torchattacks pieces (fra31 standard budgets)",
        "model": str(args.model),
        "norm": norm,
        "eps": args.eps,
        "first": args.first,
        "count": n,
        "attacks": args.attack_names,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "clean_accuracy": float(np.mean(clean_correct)),
        "robust_accuracy": float(np.mean(robust)),
        "robust_accuracy_twin": float(np.mean(twin_correct)),
        "robust_by_stage": {
            "clean": float(np.mean(clean_correct)),
            **{c["attack"]: c["robust_accuracy"] for c in cascade},
        },
        "cascade": cascade,
        "robust_flags": [bool(v) for v in robust],
        "broken_by": [
            "clean" if not c else b for c, b in zip(clean_correct, log.broken_by, strict=True)
        ],
        "checks": {
            "keras_vs_twin_flag_disagreements": int(np.sum(robust != twin_correct)),
            "cascade_log_consistent": log.consistent,
            "norm_violations": int(norm_bad.sum()),
            "range_violations": int(range_bad.sum()),
            "max_perturbation": float(sizes.max()) if n else 0.0,
            "twin_max_logit_diff_clean": clean_check.max_abs_diff,
            "twin_max_logit_diff_adversarial": adv_check.max_abs_diff,
            "twin_argmax_disagreements_clean": clean_check.argmax_disagreements,
            "twin_argmax_disagreements_adversarial": adv_check.argmax_disagreements,
        },
        "twin_max_logit_diff": max(clean_check.max_abs_diff, adv_check.max_abs_diff),
        "seconds": {
            "total": round(time.perf_counter() - t_start, 3),
            "attack": round(attack_seconds, 3),
            "per_attack": {c["attack"]: c["seconds"] for c in cascade},
            # process CPU time (all threads): less sensitive than wall time to other load
            "cpu_total": round(time.process_time() - cpu_start, 3),
            "cpu_per_attack": {c["attack"]: c["cpu_seconds"] for c in cascade},
        },
        "torch_num_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        # 1/5/15-minute load averages: other work on the machine inflates the timings above.
        "load_average": {"start": list(load_before), "end": list(os.getloadavg())},
    }


def main(argv: list[str] | None = None) -> int:
    """Run, print a summary, write the JSON."""
    args = parse_args(argv)
    result = run(args)
    summary = {k: v for k, v in result.items() if k not in ("robust_flags", "broken_by")}
    print(json.dumps(summary, indent=1))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
