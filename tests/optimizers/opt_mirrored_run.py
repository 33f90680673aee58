"""Run by test_opt_mirrored.py in a fresh process: two logical CPUs must be set before TF starts.

Trains the same model with the same Transformed optimizer under a two-replica MirroredStrategy
and on one device, and prints JSON comparing them: once with clipping, freezing, noise and the
debug record, once with a stateful chain (running-quantile clip, top-k with error feedback,
per-group rates, noise).
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


def stateless_chain() -> list[rko.GradientTransform]:
    return [
        rko.check_numerics(),
        rko.clip_by_global_norm(0.5),
        rko.freeze_small_weights(FREEZE),
        rko.gaussian_noise(0.01),
    ]


def stateful_chain() -> list[rko.GradientTransform]:
    return [
        rko.scale_by_pattern([("*/bias", 0.5)]),
        rko.clip_by_running_quantile(0.8, window=3),
        rko.top_k_sparsify(0.3),
        rko.gaussian_noise(0.01),
    ]


def train(strategy: tf.distribute.Strategy, start: list[np.ndarray], chain) -> keras.Model:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)]
        )
        model.set_weights(start)
        optimizer = rko.Transformed(keras.optimizers.Adam(1e-2), chain(), seed=3, debug=True)
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    return model


keras.utils.set_random_seed(0)
start = [
    np.random.default_rng(1).normal(0, 0.3, s).astype(np.float32)
    for s in [(8, 16), (16,), (16, 3), (3,)]
]


def local_values(model: keras.Model, variables) -> list[list[np.ndarray]]:
    """Each variable's value on each replica."""
    results = model.distribute_strategy.experimental_local_results
    return [[np.asarray(v) for v in results(w.value)] for w in variables]


def identical(replica_values: list[list[np.ndarray]]) -> bool:
    return all(all(v.tobytes() == values[0].tobytes() for v in values) for values in replica_values)


def largest_difference(replica_values: list[list[np.ndarray]], variables) -> float:
    return max(
        float(np.abs(values[0] - np.asarray(w)).max())
        for values, w in zip(replica_values, variables, strict=True)
    )


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = train(strategy, start, stateless_chain)
single = train(tf.distribute.get_strategy(), start, stateless_chain)
replica_values = local_values(mirrored, mirrored.trainable_weights)
mirrored_stateful = train(strategy, start, stateful_chain)
single_stateful = train(tf.distribute.get_strategy(), start, stateful_chain)
stateful_values = local_values(mirrored_stateful, mirrored_stateful.trainable_weights)
own = len(mirrored_stateful.optimizer._variables)
state_values = local_values(mirrored_stateful, mirrored_stateful.optimizer._variables[4:own])
frozen = [np.abs(s) < FREEZE for s in start]
report = {
    "replicas": [len(values) for values in replica_values],
    "replicas_identical": identical(replica_values),
    "max_difference_to_single_device": largest_difference(replica_values, single.trainable_weights),
    "frozen_count": int(sum(f.sum() for f in frozen)),
    "frozen_bit_identical": all(
        values[0][f].tobytes() == s[f].tobytes()
        for values, f, s in zip(replica_values, frozen, start, strict=True)
    ),
    "iterations": [int(m.optimizer.iterations.numpy()) for m in (mirrored, single)],
    "noise_std": float(mirrored.optimizer.debug_metrics["noise_std"].result()),
    "stateful_replicas_identical": identical(stateful_values) and identical(state_values),
    "stateful_state_count": len(state_values),
    "stateful_max_difference_to_single_device": largest_difference(
        stateful_values, single_stateful.trainable_weights
    ),
    "stateful_state_max_difference_to_single_device": largest_difference(
        state_values, single_stateful.optimizer._variables[4:own]
    ),
    "quantile_count": int(mirrored_stateful.optimizer.transform_states()[1][1]),
}
print(json.dumps(report))
