"""Peak memory of `robustkit.runs.evaluate_folder` on image folders: streamed, not held.

Run from the repository root:  python benchmarks/bench_memory.py [--work DIR]

For each case a folder of random 8-bit PNGs is written under ``--work`` (default: a temporary
folder), then a fresh Python process evaluates it with a tiny model (one strided convolution,
global pooling, a dense head; random weights), a short suite (APGD-CE and APGD-T, 3 steps each,
Linf eps 2/255 and 8/255) and checks 4 and 9, which read every image again. The child reports
its peak resident memory (``VmHWM`` of /proc/self/status) once TensorFlow and the model are
loaded, and at the end. Cases: 1,000 and 10,000 MNIST-size images (28x28x1), 250 (one chunk of
4 batches of 64), 1,000, 2,000 and 10,000 images of 224x224x3 (1.5 GB of PNGs), and the 1,000
again with every image read into memory first (``evaluate`` on arrays), to show what streaming
saves. Memory only: the
timings of this shared machine are not recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CASES = [  # (name, images, (height, width, channels), read everything into memory first)
    ("mnist-1000", 1_000, (28, 28, 1), False),
    ("mnist-10000", 10_000, (28, 28, 1), False),
    ("rgb224-250", 250, (224, 224, 3), False),
    ("rgb224-1000", 1_000, (224, 224, 3), False),
    ("rgb224-2000", 2_000, (224, 224, 3), False),
    ("rgb224-10000", 10_000, (224, 224, 3), False),
    ("rgb224-1000-in-memory", 1_000, (224, 224, 3), True),
]
CLASSES = 10
BATCH = 64
EPSILONS = [2 / 255, 8 / 255]


def peak_rss_mib() -> float:
    """High-water mark of this process's resident memory (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_folder(root: Path, count: int, shape: tuple[int, int, int]) -> None:
    """``count`` random PNGs in 10 class folders (kept when already there)."""
    import numpy as np
    from PIL import Image

    if len(list(root.rglob("*.png"))) == count:
        return
    rng = np.random.default_rng(0)
    for i in range(count):
        codes = rng.integers(0, 256, shape, dtype=np.uint8)
        path = root / f"class{i % CLASSES}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(codes[..., 0] if shape[-1] == 1 else codes).save(path)


def child(folder: str, shape: list[int], in_memory: bool, out: str) -> None:
    """Evaluate ``folder`` and print one JSON line of peak memory figures."""
    import keras
    import numpy as np

    from robustkit.attacks import APGD, APGDT
    from robustkit.evaluation import SuiteAttack, evaluate
    from robustkit.models import Classifier
    from robustkit.runs import ImageOptions, evaluate_folder, read_labelled_images

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(tuple(shape)),
            keras.layers.Conv2D(8, 4, strides=4, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES),
        ]
    )
    classifier = Classifier(model)
    classifier.predict_logits(np.zeros((1, *shape), np.float32))
    loaded = peak_rss_mib()
    settings = {
        "suite": [
            SuiteAttack("apgd-ce", APGD, {"steps": 3}),
            SuiteAttack("apgd-t", APGDT, {"steps": 3, "targets": 2}),
        ],
        "checks": [4, 9],
        "seed": 0,
    }
    options = ImageOptions(batch_size=BATCH)
    if in_memory:
        x, y = read_labelled_images(folder, classifier, options)
        report = evaluate(
            classifier, (x, y), "linf", [2 / 255, 8 / 255], batch_size=BATCH, **settings
        )
    else:
        report = evaluate_folder(
            classifier, folder, out, "linf", EPSILONS, image_options=options, **settings
        )
    print(
        json.dumps(
            {
                "loaded_mib": loaded,
                "peak_mib": peak_rss_mib(),
                "examples": report.num_examples,
                "clean_accuracy": report.clean_accuracy,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="folder for the images (default: temporary)")
    parser.add_argument("--cases", nargs="*", help="case names to run (default: all)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, shape, in_memory, out = args.child
        child(folder, json.loads(shape), in_memory == "1", out)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    print(f"{'case':<24}{'images':>8}{'as float32':>12}{'model loaded':>14}{'peak':>10}")
    for name, count, shape, in_memory in CASES:
        if args.cases and name not in args.cases:
            continue
        folder = work / f"{count}-{'x'.join(map(str, shape))}"
        write_folder(folder, count, shape)
        out = work / f"out-{name}"
        flag = "1" if in_memory else "0"
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), json.dumps(shape), flag, str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert figures["examples"] == count
        size = count * shape[0] * shape[1] * shape[2] * 4 / 2**20
        print(
            f"{name:<24}{count:>8}{size:>9.0f} MiB{figures['loaded_mib']:>10.0f} MiB"
            f"{figures['peak_mib']:>6.0f} MiB"
        )


if __name__ == "__main__":
    main()
