"""Trains MART with AWP and EMA weights on one device and under MirroredStrategy on two logical
CPUs (run as a script: logical devices must be set up before TensorFlow initialises); prints
the largest weight and metric differences as JSON."""

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
from robustkit.training import AdversarialTrainer

X, Y = blobs(52, seed=4)  # batches of 16, 16, 16 and 4 examples
X_VAL, Y_VAL = blobs(20, seed=5)


def train(strategy: tf.distribute.Strategy) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    with strategy.scope():
        model = small_cnn(seed=11)
        trainer = AdversarialTrainer(
            model,
            keras.optimizers.SGD(0.2, momentum=0.9, use_ema=True, ema_momentum=0.7),
            PGD("linf", 0.1, steps=3, random_start=False),
            method="mart",
            awp=0.02,
            ema_weights=True,
            validation_attack=PGD("linf", 0.1, steps=2, random_start=False),
        )
        history = trainer.fit((X, Y), 2, validation=(X_VAL, Y_VAL), batch_size=16)
    return weights_of(model), history.history


def main() -> None:
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one_weights, one_history = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
    two_weights, two_history = train(mirrored)
    initial = weights_of(small_cnn(seed=11))
    report = {
        "replicas": mirrored.num_replicas_in_sync,
        **compare_runs((one_weights, one_history), (two_weights, two_history), initial),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
