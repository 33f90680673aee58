"""Peak memory of attacking 224x224x3 images through ResNet50: per batch size, and over a whole
folder streamed by ``robustkit attack`` at the default ``--batch-size``.

Run from the repository root:  python benchmarks/bench_memory_resnet.py
(ResNet50 with random weights, ``weights=None``: memory does not depend on them.)

1. For each ``--batch-sizes`` value, a fresh process runs PGD (2 steps, full budget) on one
   batch and reports its peak RSS (``ru_maxrss``) before and after the attack.
2. ``robustkit attack`` (FGSM, 8-bit output) over ``--images`` PNGs made from MNIST digits
   (resized to 224x224, grey replicated to RGB), and over a quarter of them, in child processes:
   peak RSS of each. Equal peaks mean the folder is streamed, not held in memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from robustkit.io import load_mnist

ONE_BATCH = """
import resource, sys
import keras, numpy as np
from robustkit.attacks import PGD
from robustkit.models import Classifier
batch = int(sys.argv[1])
model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3),
                                    classifier_activation=None)
x = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
PGD("linf", 8 / 255, steps=2, early_stop=False)(Classifier(model), x, batch_size=batch)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{before:.0f} {after:.0f}")
"""


FOLDER_RUN = """
import resource, sys
from robustkit_cli.main import main
try:
    main(sys.argv[1:])
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
"""


def folder_run_peak_mib(arguments: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``robustkit ARGUMENTS`` in a child process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", FOLDER_RUN, *arguments], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"robustkit {' '.join(arguments)} failed:\n{done.stderr[-2000:]}")
    return float(done.stderr.strip().splitlines()[-1]), seconds


def write_images(folder: Path, digits: np.ndarray) -> None:
    """MNIST digits as 224x224 RGB PNGs in folder (no labels: the model's predictions serve)."""
    for index, digit in enumerate(digits):
        picture = Image.fromarray(digit).resize((224, 224), Image.BILINEAR).convert("RGB")
        picture.save(folder / f"{index:05d}.png")


def save_model(path: Path) -> None:
    """ResNet50 with random weights, saved as .keras (in a child, to keep this process small)."""
    code = (
        "import keras, sys; keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3),"
        " classifier_activation=None).save(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        done = subprocess.run(
            [sys.executable, "-c", ONE_BATCH, str(batch)], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        before, after = done.stdout.split()
        print(f"PGD-2 on one batch of {batch:3d}: peak RSS {after} MiB (model loaded: {before})")
    digits, _ = load_mnist(args.mnist)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        save_model(root / "resnet50.keras")
        for count in (args.images // 4, args.images):
            images = root / f"images_{count}"
            images.mkdir()
            write_images(images, digits[8000 : 8000 + count])
            arguments = [
                "attack", str(root / "resnet50.keras"), str(images), "--attack", "fgsm",
                "--eps", "8/255", "--out", str(root / f"out_{count}"), "--quiet",
            ]  # fmt: skip
            peak, seconds = folder_run_peak_mib(arguments)
            print(
                f"robustkit attack, {count:5d} images 224x224x3, default --batch-size: "
                f"peak RSS {peak:.0f} MiB ({seconds:.0f} s)"
            )


if __name__ == "__main__":
    main()
