"""The job of ``robustkit attack`` through the Python API: attack the example digits, save exact
8-bit PNGs, and check the attack on the saved files.

Run from the repository root: ``python examples/attack_folder.py --out adversarial_api``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from robustkit.attacks import PGD
from robustkit.io import ImageFolder, from_uint8, read_image, save_image, write_csv
from robustkit.models import load_classifier

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("adversarial_api"))
    parser.add_argument("--eps", type=float, default=0.3)
    args = parser.parse_args()

    classifier = load_classifier(HERE / "mnist_cnn.keras")  # safe_mode stays on
    # Class subfolders 0..9 give the labels, as in Keras' image_dataset_from_directory.
    folder = ImageFolder(
        HERE / "images", image_shape=classifier.input_shape, num_classes=classifier.num_classes
    )
    # quantize=255: the attack finishes on the 8-bit grid, so the PNG is what was evaluated.
    attack = PGD("linf", eps=args.eps, steps=40, quantize=255, seed=0)

    rows = []
    for batch in folder.batches(batch_size=64):  # memory bounded by the batch size
        result = attack(classifier, batch.pixels(), batch.labels)
        saved = []
        for entry, x_adv in zip(batch.entries, result.x_adv, strict=True):
            path = args.out / entry.relative
            save_image(path, x_adv)  # rounds to the grid and writes atomically
            saved.append(read_image(path, channels=classifier.input_shape[-1])[0])
        # Judge the attack on the pixels read back from disk, not on the float tensor.
        adv_pred = classifier.predict_logits(from_uint8(np.stack(saved))).argmax(axis=1)
        for i, entry in enumerate(batch.entries):
            rows.append(
                {
                    "path": entry.relative,
                    "label": entry.label,
                    "clean_pred": int(result.clean_pred[i]),
                    "adv_pred": int(adv_pred[i]),
                    "success": bool(adv_pred[i] != entry.label),
                    "success_before_quantization": bool(result.success_unquantized[i]),
                    "linf": float(result.linf[i]),
                }
            )
    write_csv(args.out / "report.csv", rows, list(rows[0]))

    clean = np.mean([row["clean_pred"] == row["label"] for row in rows])
    robust = np.mean([row["adv_pred"] == row["label"] for row in rows])
    success = np.mean([row["success"] for row in rows])
    print(f"{len(rows)} images, {attack!r}")
    print(f"clean accuracy {clean:.1%}, robust accuracy {robust:.1%}, success {success:.1%}")
    print(f"wrote {len(rows)} adversarial PNGs and report.csv to {args.out}")


if __name__ == "__main__":
    main()
