"""Evaluates the same model on one device and under MirroredStrategy on two logical CPUs.

Run as a script (logical devices must be set up before TensorFlow initialises); prints a JSON
object saying which report arrays and numbers differ between the two runs.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from robustkit.attacks import PGD, Square  # noqa: E402
from robustkit.evaluation import SuiteAttack, evaluate  # noqa: E402
from robustkit.models import Classifier  # noqa: E402

keras.utils.set_random_seed(0)
MODEL = keras.Sequential(
    [
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(4),
    ]
)
CLASSIFIER = Classifier(MODEL)
RNG = np.random.default_rng(0)
X = (RNG.integers(0, 256, (18, 8, 8, 1)) / 255).astype(np.float32)  # chunks 4, 4, 4, 4, 2
Y = CLASSIFIER.predict_logits(X).argmax(1)
Y[:3] = (Y[:3] + 1) % 4  # three misclassified examples
SUITE = [
    SuiteAttack("pgd-ce", PGD, {"steps": 5, "rel_step_size": 0.5}),
    SuiteAttack("pgd-targeted", PGD, {"steps": 5, "loss": "margin"}, top_k_targets=2),
    SuiteAttack("square", Square, {"queries": 30}),
]


def run(strategy: tf.distribute.Strategy | None):
    return evaluate(
        CLASSIFIER,
        (X, Y),
        "linf",
        [0.02],
        suite=SUITE,
        seed=2,
        strategy=strategy,
        batch_size=4,
        checks=["single_step"],
        check_samples=12,
        per_example=True,
        return_images=True,
    )


def main() -> None:
    single = run(None)
    multi = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    one, two = single.to_numpy(), multi.to_numpy()
    differing = [name for name in one if not np.array_equal(one[name], two[name])]
    checks_equal = [
        (a.verdict, a.details) == (b.verdict, b.details)
        for a, b in zip(single.checks, multi.checks, strict=True)
    ]
    print(
        json.dumps(
            {
                "replicas": multi.environment["replicas"],
                "differing_arrays": differing,
                "checks_equal": all(checks_equal),
                "verification_equal": single.verification == multi.verification,
                "broken": int((one["broken_by"] >= 0).sum()),
                "robust": int(one["robust"].sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
