"""Run in a fresh process by test_train_averaging.py: two epochs of deterministic PGD training
of a tiny BatchNorm CNN; prints the SHA-256 of the final weights' bytes as JSON."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras
import numpy as np
from tensorflow.python.framework import config
from training_helpers import blobs, small_cnn, weights_of

from robustkit.attacks import PGD
from robustkit.training import AdversarialTrainer


def main() -> None:
    x, y = blobs(64, seed=1)
    model = small_cnn(seed=3, batch_norm=True)
    initial = weights_of(model)
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.Adam(0.01),
        PGD("linf", 0.1, steps=3),
        validation_attack=PGD("linf", 0.1, steps=2),
        deterministic=True,
        seed=5,
    )
    trainer.fit((x, y), 2, batch_size=16, validation=(x[:16], y[:16]))
    final = weights_of(model)
    digest = hashlib.sha256(b"".join(w.tobytes() for w in final)).hexdigest()
    change = max(float(np.abs(a - b).max()) for a, b in zip(final, initial, strict=True))
    report = {
        "digest": digest,
        "weight_change": change,
        "op_determinism": bool(config.is_op_determinism_enabled()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
