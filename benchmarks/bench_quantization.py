"""Attack CLI / quantization: success lost to 8-bit PNGs, and the CLI's memory as folders grow.

Part 1: how much attack success is lost when adversarial images are saved as 8-bit PNGs.

On the shipped example model (examples/mnist_cnn.keras) and held-out MNIST test digits, each
attack runs twice:

- plain (``quantize=None``): the float result is rounded to the 8-bit grid afterwards (and put
  back into the eps-ball), as a naive tool would save it;
- quantization-aware (``quantize=255``, what ``robustkit attack`` uses): the attack snaps to the
  grid inside the ball and takes its last steps on the grid.

Success is judged on the rounded pixels, exactly what a PNG holds. "Lost" counts images that
were adversarial as floats but not after rounding.

Part 2 (``--streaming``): ``robustkit attack`` on 1,000 and on all 10,000 MNIST test digits
written as PNGs, in separate processes; their peak resident memory should be about the same,
since images are streamed in batches.

Run from the repository root:

    python benchmarks/bench_quantization.py [--count 1000] [--streaming]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from robustkit.attacks import FGSM, PGD
from robustkit.io import from_uint8, load_mnist, write_png
from robustkit.models import load_classifier
from robustkit.runs import saved_codes

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


def peak_memory_of_cli_run(images: Path, out: Path) -> tuple[float, float]:
    """(peak resident MiB, images/s) of one ``robustkit attack`` process (FGSM, batches of 256)."""
    command = [
        "robustkit", "attack", str(ROOT / "examples" / "mnist_cnn.keras"), str(images),
        "--attack", "fgsm", "--eps", "25/255", "--batch-size", "256", "--out", str(out), "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"robustkit attack failed: {' '.join(command)}")
    summary = json.loads((out / "report.json").read_text())["summary"]
    return usage.ru_maxrss / 1024, summary["images_per_second"]


def streaming(digits: np.ndarray) -> None:
    """Peak memory of the CLI on 1,000 vs 10,000 PNG digits (class subfolders 0..9 unused)."""
    work = Path(tempfile.mkdtemp(prefix="robustkit-bench-"))
    try:
        for index, digit in enumerate(digits):
            write_png(work / "all" / f"{index:05d}.png", digit[:, :, None])
        (work / "some").mkdir()
        for index in range(1000):
            os.link(work / "all" / f"{index:05d}.png", work / "some" / f"{index:05d}.png")
        print("images | peak RSS MiB | images/s")
        for name in ("some", "all"):
            count = len(list((work / name).iterdir()))
            memory, speed = peak_memory_of_cli_run(work / name, work / f"out-{name}")
            print(f"{count:6d} | {memory:12.0f} | {speed:8.0f}")
    finally:
        shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="held-out digits to attack")
    parser.add_argument("--streaming", action="store_true", help="only part 2 (CLI memory)")
    args = parser.parse_args()
    digits, labels = load_mnist(ROOT.parent / "shared" / "data" / "mnist")
    if args.streaming:
        streaming(digits)
        return
    classifier = load_classifier(ROOT / "examples" / "mnist_cnn.keras")
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
