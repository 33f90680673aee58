"""Train a robust MNIST CNN from scratch with robustkit's adversarial training.

Data: the MNIST test set shipped in ../shared/data/mnist (10,000 digits). The first 8,000 train
the model (the last ``--validation`` of them are held back for robust early stopping); the last
2,000 are never touched here and serve as the benchmark's held-out set.

Recipe (defaults): a small CNN, a few cheap epochs of the fast method (FGSM with random start)
while eps ramps up to 0.3, then TRADES (β = 6) with a PGD-k inner maximisation, Adam under a
one-cycle learning rate, random 2-pixel shifts, and the weights of the best robust validation
epoch kept at the end. Options: ``--n-fgsm`` warms up with N-FGSM instead of FGSM-RS,
``--grad-align``, ``--awp`` and ``--ema`` add GradAlign, adversarial weight perturbation and
weight averaging to the main phase, ``--method mart`` trains MART, ``--deterministic`` turns on
op determinism. Writes ``examples/mnist_robust.keras`` (never over an existing file
unless ``--overwrite``) and a JSON history next to it.

Run from the repository root: ``python examples/train_robust_mnist.py`` (about 15 minutes on
two CPU cores), then ``python benchmarks/bench_training.py robust`` for the strong evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD
from robustkit.io import from_uint8, load_mnist
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
) -> tf.data.Dataset:
    """Shuffled batches of digits moved by up to ``shift`` pixels each way (zero fill)."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if shift:

        def move(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
            return tf.image.random_crop(padded, tf.shape(image), seed=seed), label

        dataset = dataset.map(move, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def one_cycle(peak: float, total_steps: int, warm: float = 0.4) -> PiecewiseLinear:
    """Learning rate rising linearly to ``peak`` over ``warm`` of the steps, then to zero."""
    top = max(1, int(warm * total_steps))
    return PiecewiseLinear([0, top, max(top + 1, total_steps)], [peak / 20, peak, 0.0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", default=str(HERE / "mnist_robust.keras"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv")
    parser.add_argument("--fast-epochs", type=int, default=4, help="fast-method warm-up epochs")
    parser.add_argument("--epochs", type=int, default=18, help="TRADES (or --method) epochs")
    parser.add_argument("--method", default="trades", choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=10, help="PGD steps in training")
    parser.add_argument("--step-size", type=float, default=0.04)
    parser.add_argument("--beta", type=float, default=6.0)
    parser.add_argument("--n-fgsm", action="store_true", help="warm up with N-FGSM, not FGSM-RS")
    parser.add_argument("--grad-align", type=float, default=0.0, help="GradAlign's λ (0: off)")
    parser.add_argument("--awp", type=float, default=None, help="AWP radius gamma, e.g. 5e-3")
    parser.add_argument("--ema", type=float, default=None, help="EMA momentum, e.g. 0.999")
    parser.add_argument("--deterministic", action="store_true", help="op determinism on")
    parser.add_argument("--train-eps", type=float, default=EPS)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (Adam)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--shift", type=int, default=2, help="random shift in pixels")
    parser.add_argument("--validation", type=int, default=500, help="digits for early stopping")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        sys.exit(f"{out} exists; pass --overwrite or choose another --out.")
    keras.utils.set_random_seed(args.seed)
    x_all, y_all, x_held, y_held = mnist_split(args.mnist)
    cut = TRAIN_COUNT - args.validation
    x_train, y_train = x_all[:cut], y_all[:cut]
    validation = (x_all[cut:], y_all[cut:]) if args.validation else None
    train = shifted_batches(x_train, y_train, args.batch_size, args.shift, args.seed)

    model = build_model(args.width)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    total_steps = (args.fast_epochs + args.epochs) * steps_per_epoch
    averaging = {"use_ema": True, "ema_momentum": args.ema} if args.ema is not None else {}
    optimizer = keras.optimizers.Adam(one_cycle(args.lr, total_steps), **averaging)
    validation_attack = PGD("linf", EPS, steps=20, step_size=0.03, seed=args.seed)
    progress = [ProgressLogger(every=0)]
    started, cpu_started = time.perf_counter(), time.process_time()
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
            json.loads(warm_up.fit(train, args.fast_epochs, callbacks=progress).to_json())
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
    history = trainer.fit(train, args.epochs, validation=validation, callbacks=progress)
    histories.append(json.loads(history.to_json()))
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started  # all threads; robust to machine load

    held = trainer.evaluate(x_held, y_held, attack=validation_attack)
    print(
        f"trained in {seconds / 60:.1f} min ({cpu_seconds / 60:.1f} CPU-min); held-out clean "
        f"{held['clean_accuracy']:.4f}, PGD-20 robust {held['adv_accuracy']:.4f} "
        f"(best epoch {history.best_epoch})"
    )
    model.save(out)
    report = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "held_out_pgd20": held,
        "args": vars(args),
        "phases": histories,
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
