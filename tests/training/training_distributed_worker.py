"""Trains the same model on one device and under MirroredStrategy on two logical CPUs.

Run as a script (logical devices must be set up before TensorFlow initialises); prints a JSON
object with the largest weight and metric differences between the two runs.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_helpers import blobs, compare_runs, small_cnn, weights_of

from robustkit.attacks import PGD
from robustkit.optimizers import clipped_noisy
from robustkit.training import AdversarialTrainer

X, Y = blobs(52, seed=4)  # batches of 16, 16, 16 and 4 examples
X_VAL, Y_VAL = blobs(20, seed=5)


def optimizer(name: str) -> keras.optimizers.Optimizer:
    sgd = keras.optimizers.SGD(0.2, momentum=0.9)  # not scale-invariant, unlike Adam
    if name == "sgd":
        return sgd
    # Clipping must see the global gradient and the noise must be drawn once per step.
    return clipped_noisy(sgd, clip_norm=0.3, noise=0.05, seed=2)


def train(
    strategy: tf.distribute.Strategy, optimizer_name: str
) -> tuple[list[np.ndarray], dict[str, list[float]], int]:
    """Final weights, history, and the replicas validation ran on."""
    with strategy.scope():
        model = small_cnn(seed=11)
        trainer = AdversarialTrainer(
            model,
            optimizer(optimizer_name),
            PGD("linf", 0.1, steps=3, random_start=False),
            method="mixed",
            gradient_penalty=0.05,
            restore_best=False,
        )
        history = trainer.fit((X, Y), 3, validation=(X_VAL, Y_VAL), batch_size=16)
    return weights_of(model), history.history, trainer.validator.executor.replicas


def main() -> None:
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    initial = weights_of(small_cnn(seed=11))
    report = {"replicas": mirrored.num_replicas_in_sync}
    for name in ("sgd", "clipped_noisy"):
        one_weights, one_history, _ = train(tf.distribute.OneDeviceStrategy("/cpu:0"), name)
        two_weights, two_history, validation_replicas = train(mirrored, name)
        report[name] = {
            "validation_replicas": validation_replicas,
            **compare_runs((one_weights, one_history), (two_weights, two_history), initial),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
