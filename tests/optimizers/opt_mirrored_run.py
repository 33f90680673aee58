"""Run by test_opt_mirrored.py in a fresh process: two logical CPUs must be set before TF starts.

Trains the same model with the same Transformed optimizer (clip, freeze, noise, debug) under a
two-replica MirroredStrategy and on one device, and prints JSON comparing them.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from robustkit import optimizers as rko  # noqa: E402

FREEZE = 0.05


def train(strategy: tf.distribute.Strategy, start: list[np.ndarray]) -> keras.Model:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
        )
        model.set_weights(start)
        optimizer = rko.Transformed(
            keras.optimizers.Adam(1e-2),
            [
                rko.check_numerics(),
                rko.clip_by_global_norm(0.5),
                rko.freeze_small_weights(FREEZE),
                rko.gaussian_noise(0.01),
            ],
            seed=3,
            debug=True,
        )
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    return model


keras.utils.set_random_seed(0)
start = [
    np.random.default_rng(1).normal(0, 0.3, s).astype(np.float32)
    for s in [(8, 16), (16,), (16, 3), (3,)]
]
mirrored = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), start)
single = train(tf.distribute.get_strategy(), start)
replica_values = [
    [np.asarray(v) for v in mirrored.distribute_strategy.experimental_local_results(w.value)]
    for w in mirrored.trainable_weights
]
frozen = [np.abs(s) < FREEZE for s in start]
report = {
    "replicas": [len(values) for values in replica_values],
    "replicas_identical": all(
        all(v.tobytes() == values[0].tobytes() for v in values) for values in replica_values
    ),
    "max_difference_to_single_device": max(
        float(np.abs(values[0] - np.asarray(w)).max())
        for values, w in zip(replica_values, single.trainable_weights, strict=True)
    ),
    "frozen_count": int(sum(f.sum() for f in frozen)),
    "frozen_bit_identical": all(
        values[0][f].tobytes() == s[f].tobytes()
        for values, f, s in zip(replica_values, frozen, start, strict=True)
    ),
    "iterations": [int(m.optimizer.iterations.numpy()) for m in (mirrored, single)],
    "noise_std": float(mirrored.optimizer.debug_metrics["noise_std"].result()),
}
print(json.dumps(report))
