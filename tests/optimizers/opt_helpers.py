"""Shared pieces of the optimizer tests: a small model and data, and running one transform."""

import keras
import numpy as np
import tensorflow as tf

from robustkit import optimizers as rko


def small_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )


def data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 3, n)


def compile_model(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> keras.Model:
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(True))
    return model


def values(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def key(step: int = 0, seed: int = 0) -> tf.Tensor:
    return tf.constant([seed, step], tf.int64)


def run_steps(
    transform: rko.GradientTransform,
    gradient_steps: list[list[np.ndarray]],
    weights: list[np.ndarray] | None = None,
) -> tuple[list[list[np.ndarray]], object]:
    """Call ``init`` once, then ``update`` on each step's gradients (weights fixed): the outputs
    of every step and the last state."""
    first = gradient_steps[0]
    variables = [
        tf.Variable(np.ones_like(g) if weights is None else w)
        for g, w in zip(first, weights or first, strict=True)
    ]
    state = transform.init(variables)
    outputs = []
    for step, gradients in enumerate(gradient_steps):
        tensors = [tf.constant(g) for g in gradients]
        got, state = transform.update(
            tensors, state, variables, tf.constant(step, tf.int64), key(step)
        )
        outputs.append([t.numpy() for t in got])
    return outputs, state


def run(transform: rko.GradientTransform, gradients: list[np.ndarray]) -> list[np.ndarray]:
    """One step of ``transform`` from its initial state, on weights of ones."""
    outputs, _ = run_steps(transform, [gradients])
    return outputs[0]
