"""Fine-tune the shipped MNIST CNN with PGD adversarial training and a clipped, noisy AdamW.

1. load ``examples/mnist_cnn.keras`` (safe mode on);
2. report clean and robust accuracy on the held-out digits (MNIST test set 8000..9999);
3. fine-tune with PGD-AT on digits 0..7999, the optimizer being AdamW behind
   ``robustkit.optimizers.clipped_noisy`` (global-norm clipping, then Gaussian noise);
4. report again and save to a new ``.keras`` file. The original is never overwritten.

Run from the repository root: ``python examples/adversarial_finetune.py`` (a few minutes on two
CPU cores; ``--epochs`` and ``--eps`` trade time for robustness).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np

from robustkit.attacks import PGD
from robustkit.io import from_uint8, load_mnist
from robustkit.models import load_classifier
from robustkit.optimizers import clipped_noisy
from robustkit.training import AdversarialTrainer, ProgressLogger

HERE = Path(__file__).resolve().parent
TRAIN_COUNT = 8000  # digits 0..7999 fine-tune; 8000..9999 are held out


def report(
    trainer: AdversarialTrainer, x: np.ndarray, y: np.ndarray, attack: PGD, when: str
) -> None:
    metrics = trainer.evaluate(x, y, attack=attack)
    print(
        f"{when}: clean accuracy {metrics['clean_accuracy']:.4f}, robust accuracy "
        f"{metrics['adv_accuracy']:.4f} (Linf eps {attack.norm.eps:g}, PGD-{attack.steps})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(HERE / "mnist_cnn.keras"))
    parser.add_argument("--out", default=str(HERE / "mnist_cnn_finetuned.keras"))
    parser.add_argument("--mnist", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7, help="PGD steps while training")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=1e-3, help="gradient noise std")
    args = parser.parse_args()

    source, out = Path(args.model).resolve(), Path(args.out).resolve()
    if out == source or out.exists():
        sys.exit(f"{out} exists (or is the original model); choose a new --out.")
    if out.suffix != ".keras":
        sys.exit("--out must end in .keras")

    digits, labels = load_mnist(args.mnist)
    x = from_uint8(digits[..., None])
    x_train, y_train = x[:TRAIN_COUNT], labels[:TRAIN_COUNT]
    x_held, y_held = x[TRAIN_COUNT:], labels[TRAIN_COUNT:]

    classifier = load_classifier(source)
    optimizer = clipped_noisy(
        keras.optimizers.AdamW(args.lr, weight_decay=1e-4),
        clip_norm=args.clip_norm,
        noise=args.noise,
        seed=0,
    )
    trainer = AdversarialTrainer(
        classifier,
        optimizer,
        PGD("linf", args.eps, steps=args.steps),
        method="pgd",
    )
    evaluation = PGD("linf", args.eps, steps=20, rel_step_size=0.1, seed=1)
    report(trainer, x_held, y_held, evaluation, "before")
    trainer.fit((x_train, y_train), args.epochs, batch_size=128, callbacks=[ProgressLogger()])
    report(trainer, x_held, y_held, evaluation, "after")
    classifier.model.save(out)
    print(f"saved {out} (the original {source} is unchanged)")


if __name__ == "__main__":
    main()
