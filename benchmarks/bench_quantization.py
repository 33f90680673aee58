"""How much attack success is lost when adversarial images are saved as 8-bit PNGs.

On the shipped example model (examples/mnist_cnn.keras) and held-out MNIST test digits, each
attack runs twice:

- plain (``quantize=None``): the float result is rounded to the 8-bit grid afterwards (and put
  back into the eps-ball), as a naive tool would save it;
- quantization-aware (``quantize=255``, what ``robustkit attack`` uses): the attack snaps to the
  grid inside the ball and takes its last steps on the grid.

Success is judged on the rounded pixels, exactly what a PNG holds. "Lost" counts images that
were adversarial as floats but not after rounding. Run from the repository root:

    python benchmarks/bench_quantization.py [--count 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from robustkit_cli.attack import saved_codes

from robustkit.attacks import FGSM, PGD
from robustkit.io import from_uint8, load_mnist
from robustkit.models import load_classifier

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 8000  # the example model trained on test digits 0..7999

# eps=25/255 lies on the grid; eps=0.1 = 25.5/255 does not, so its 8-bit ball is smaller
# (25 grid steps) and even a perfect quantization loses the images that need the last half step.
ATTACKS = {
    "PGD-40 Linf eps=25/255": lambda quantize: PGD("linf", 25 / 255, steps=40, quantize=quantize),
    "PGD-40 Linf eps=0.1": lambda quantize: PGD("linf", 0.1, steps=40, quantize=quantize),
    "PGD-40 L2 eps=1.0": lambda quantize: PGD("l2", 1.0, steps=40, quantize=quantize),
    "FGSM Linf eps=25/255": lambda quantize: FGSM("linf", 25 / 255, quantize=quantize),
}


def measure(classifier, attack, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Success before and after rounding, and the time the attack took."""
    start = time.perf_counter()
    result = attack(classifier, x, y, batch_size=500)
    seconds = time.perf_counter() - start
    before = result.success if result.success_unquantized is None else result.success_unquantized
    x_saved = from_uint8(saved_codes(attack, x, result.x_adv))
    after = classifier.predict_logits(x_saved, batch_size=500).argmax(axis=1) != y
    return {
        "before": float(before.mean()),
        "after": float(after.mean()),
        "lost": int(np.sum(before & ~after)),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="held-out digits to attack")
    args = parser.parse_args()
    classifier = load_classifier(ROOT / "examples" / "mnist_cnn.keras")
    digits, labels = load_mnist(ROOT.parent / "shared" / "data" / "mnist")
    x = from_uint8(digits[HELD_OUT : HELD_OUT + args.count, :, :, None])
    y = labels[HELD_OUT : HELD_OUT + args.count]
    correct = classifier.predict_logits(x).argmax(axis=1) == y
    print(f"{args.count} held-out MNIST digits, clean accuracy {correct.mean():.2%}")
    print("attack                   | mode    | success float | success 8-bit | lost | seconds")
    for name, make in ATTACKS.items():
        for mode, quantize in (("plain", None), ("aware", 255)):
            attack = make(quantize)
            attack(classifier, x[:8], y[:8])  # compile before timing
            m = measure(classifier, attack, x, y)
            print(
                f"{name:24} | {mode:7} | {m['before']:13.2%} | {m['after']:13.2%} | "
                f"{m['lost']:4d} | {m['seconds']:7.2f}"
            )


if __name__ == "__main__":
    main()
