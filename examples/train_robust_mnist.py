"""Train a robust MNIST CNN from scratch with robustkit's adversarial training.

Data: the MNIST test set shipped in ../shared/data/mnist (10,000 digits). The first 8,000 train
the model (the last ``--validation`` of them are held back for robust early stopping); the last
2,000 are never touched here and serve as the benchmark's held-out set.

Recipe (defaults): a small CNN, a few cheap epochs of the fast method (FGSM with random start)
while eps ramps up to 0.3, then 30 epochs of TRADES (β = 6) with a PGD-10 inner maximisation,
Adam under a one-cycle learning rate, random 2-pixel shifts, and the weights of the best robust
validation epoch (APGD-CE, 20 steps, on the validation digits) kept at the end. Options:
``--n-fgsm`` warms up with N-FGSM instead of FGSM-RS, ``--grad-align``, ``--awp`` and ``--ema``
add GradAlign, adversarial weight perturbation and weight averaging to the main phase,
``--method mart`` trains MART, ``--lr-cycles 3`` uses a cyclic learning rate. Op determinism is
on (the same seed gives the same model from one process to the next, at no measurable cost
here); ``--no-deterministic`` turns it off. Writes ``examples/mnist_robust.keras`` (never over an
existing file unless ``--overwrite``) and, just before it, a JSON history next to it; each is
written to a temporary file and renamed, so a killed run never leaves half a file under its name.

``--checkpoint-dir DIR`` checkpoints every epoch (each phase in its own subfolder) and
``--resume`` continues a killed run from there: rerunning the same command gives the same
weights and history as an uninterrupted run (the batches of each epoch depend only on the seed
and the epoch). ``--train-count`` and ``--held-out`` use fewer digits, for quick trials.

Run from the repository root: ``python examples/train_robust_mnist.py`` (about 11 minutes on
two CPU cores), then ``robustkit evaluate`` with ``--suite standard`` on the held-out digits for
the strong evaluation (benchmarks/RESULTS.md, "The robust recipe").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import APGD, PGD
from robustkit.io import from_uint8, load_mnist
from robustkit.io.files import TEMP_SUFFIX, atomic_write
from robustkit.training import (
    METHODS,
    NFGSM,
    AdversarialTrainer,
    PiecewiseLinear,
    ProgressLogger,
    eps_ramp,
)

HERE = Path(__file__).resolve().parent
TRAIN_COUNT = 8000  # digits 0..7999 train; 8000..9999 are held out
EPS = 0.3


def build_model(width: int = 32) -> keras.Model:
    """conv(w)-conv(w)-pool-conv(2w)-conv(2w)-pool-dense200-dense200-dense10 (logits)."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(width, 3, activation="relu"),
            layers.Conv2D(width, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(2 * width, 3, activation="relu"),
            layers.Conv2D(2 * width, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(200, activation="relu"),
            layers.Dense(200, activation="relu"),
            layers.Dense(10, name="logits"),
        ],
        name="mnist_robust_cnn",
    )


def mnist_split(directory: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_held, y_held): floats [N, 28, 28, 1] in [0, 1], int labels."""
    digits, labels = load_mnist(directory)
    x = from_uint8(digits[..., None])
    return x[:TRAIN_COUNT], labels[:TRAIN_COUNT], x[TRAIN_COUNT:], labels[TRAIN_COUNT:]


def shifted_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, shift: int, seed: int
) -> Callable[[int], tf.data.Dataset]:
    """epoch -> shuffled batches of digits moved by up to ``shift`` pixels each way (zero fill).

    The order and the shifts of an epoch are drawn from ``(seed, epoch)`` alone, so a resumed
    run trains on the same batches as an uninterrupted one (the trainer calls this per epoch).
    """
    labels = y.astype(np.int32)
    size = x.shape[1:3]

    def epoch_batches(epoch: int) -> tf.data.Dataset:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(x))
        offsets = rng.integers(0, 2 * shift + 1, (len(x), 2)).astype(np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((x[order], labels[order], offsets))

        def move(image: tf.Tensor, label: tf.Tensor, at: tf.Tensor) -> tuple[tf.Tensor, ...]:
            padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
            return tf.image.crop_to_bounding_box(padded, at[0], at[1], *size), label

        dataset = dataset.map(move, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    return epoch_batches


def write_outputs(model: keras.Model, report: dict, out: Path) -> None:
    """The JSON report, then the model: each to a temporary file renamed in one step (after
    removing the temporary files of a killed run), so a present model is a finished run."""
    for stale in out.parent.glob(f".{out.stem}.*{TEMP_SUFFIX}"):
        stale.unlink()
    with atomic_write(out.with_suffix(".json"), "w") as stream:
        stream.write(json.dumps(report, indent=1, default=str))
    with tempfile.TemporaryDirectory() as scratch:  # Keras wants a path ending in .keras
        staged = Path(scratch) / out.name
        model.save(staged)
        with atomic_write(out) as stream:
            stream.write(staged.read_bytes())


def cyclic(peak: float, total_steps: int, cycles: int = 1, warm: float = 0.4) -> PiecewiseLinear:
    """``cycles`` triangles over ``total_steps``: each rises linearly from ``peak / 20`` to
    ``peak`` over ``warm`` of its steps, then falls to zero (``cycles=1``: one-cycle)."""
    length = max(2, total_steps // cycles)
    top = max(1, int(warm * length))
    boundaries, values = [], []
    for cycle in range(cycles):
        start = cycle * length + (1 if cycle else 0)  # a new cycle jumps back up a step later
        boundaries += [start, cycle * length + top, (cycle + 1) * length]
        values += [peak / 20, peak, 0.0]
    return PiecewiseLinear(boundaries, values)


def one_cycle(peak: float, total_steps: int, warm: float = 0.4) -> PiecewiseLinear:
    """Learning rate rising linearly to ``peak`` over ``warm`` of the steps, then to zero."""
    return cyclic(peak, total_steps, 1, warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", default=str(HERE / "mnist_robust.keras"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv")
    parser.add_argument("--fast-epochs", type=int, default=4, help="fast-method warm-up epochs")
    parser.add_argument("--epochs", type=int, default=30, help="TRADES (or --method) epochs")
    parser.add_argument("--method", default="trades", choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=10, help="PGD steps in training")
    parser.add_argument("--step-size", type=float, default=0.04)
    parser.add_argument("--beta", type=float, default=6.0)
    parser.add_argument("--n-fgsm", action="store_true", help="warm up with N-FGSM, not FGSM-RS")
    parser.add_argument("--grad-align", type=float, default=0.0, help="GradAlign's λ (0: off)")
    parser.add_argument("--awp", type=float, default=None, help="AWP radius gamma, e.g. 5e-3")
    parser.add_argument("--ema", type=float, default=None, help="EMA momentum, e.g. 0.995")
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="op determinism: the same seed gives the same model in every process",
    )
    parser.add_argument("--train-eps", type=float, default=EPS)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    parser.add_argument("--lr-cycles", type=int, default=1, help="triangles (1: one-cycle)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shift", type=int, default=2, help="random shift in pixels")
    parser.add_argument("--validation", type=int, default=500, help="digits for early stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-count", type=int, default=TRAIN_COUNT, help="digits 0..N-1")
    parser.add_argument("--held-out", type=int, default=10000 - TRAIN_COUNT, help="digits tested")
    parser.add_argument("--checkpoint-dir", default=None, help="checkpoint every epoch here")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    args = parser.parse_args()
    if args.lr_cycles < 1:
        parser.error(f"--lr-cycles must be >= 1, got {args.lr_cycles}")

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        sys.exit(f"{out} exists; pass --overwrite or choose another --out.")
    keras.utils.set_random_seed(args.seed)
    x_all, y_all, x_held, y_held = mnist_split(args.mnist)
    x_all, y_all = x_all[: args.train_count], y_all[: args.train_count]
    x_held, y_held = x_held[: args.held_out], y_held[: args.held_out]
    cut = len(x_all) - args.validation
    x_train, y_train = x_all[:cut], y_all[:cut]
    validation = (x_all[cut:], y_all[cut:]) if args.validation else None
    train = shifted_batches(x_train, y_train, args.batch_size, args.shift, args.seed)

    model = build_model(args.width)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    total_steps = (args.fast_epochs + args.epochs) * steps_per_epoch
    averaging = {"use_ema": True, "ema_momentum": args.ema} if args.ema is not None else {}
    optimizer = keras.optimizers.Adam(cyclic(args.lr, total_steps, args.lr_cycles), **averaging)
    # stronger than training's PGD-10, so the kept epoch is the robust one: APGD-CE, 20 steps
    validation_attack = APGD("linf", EPS, steps=20, loss="ce", seed=args.seed)
    progress = [ProgressLogger(every=0)]
    started, cpu_started = time.perf_counter(), time.process_time()
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else None
    if args.resume and checkpoints is None:
        sys.exit("--resume needs the --checkpoint-dir of the interrupted run.")

    def saving(phase: str) -> dict:
        if checkpoints is None:
            return {}
        return {"checkpoint_dir": str(checkpoints / phase), "resume": args.resume}

    histories = []
    if args.fast_epochs:
        warm_up = AdversarialTrainer(
            model,
            optimizer,
            PGD("linf", args.train_eps),
            method="fast",
            n_fgsm=NFGSM() if args.n_fgsm else None,
            eps_schedule=eps_ramp(args.train_eps, args.fast_epochs, start=0.1),
            # The warm-up only gives TRADES a start; at eps 0.3 FGSM-RS soon overfits (the
            # guard records it in the history) and the TRADES epochs repair that.
            overfit_guard="monitor",
            validation_attack=validation_attack,
            restore_best=False,
            deterministic=args.deterministic,
            seed=args.seed,
        )
        histories.append(
            json.loads(
                warm_up.fit(
                    train, args.fast_epochs, callbacks=progress, **saving("warm-up")
                ).to_json()
            )
        )
    trainer = AdversarialTrainer(
        model,
        optimizer,
        PGD("linf", args.train_eps, steps=args.steps, step_size=args.step_size),
        method=args.method,
        beta=args.beta,
        grad_align=args.grad_align,
        awp=args.awp,
        ema_weights=args.ema is not None,
        deterministic=args.deterministic,
        validation_attack=validation_attack,
        seed=args.seed + 1,
    )
    history = trainer.fit(
        train, args.epochs, validation=validation, callbacks=progress, **saving(args.method)
    )
    histories.append(json.loads(history.to_json()))
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # all threads; robust to machine load

    held = trainer.evaluate(x_held, y_held, attack=validation_attack)
    print(
        f"trained in {seconds / 60:.1f} min ({cpu_seconds / 60:.1f} CPU-min); held-out clean "
        f"{held['clean_accuracy']:.4f}, APGD-CE-20 robust {held['adv_accuracy']:.4f} "
        f"(best epoch {history.best_epoch})"
    )
    report = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "held_out_apgd_ce20": held,
        "args": vars(args),
        "phases": histories,
    }
    write_outputs(model, report, out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
