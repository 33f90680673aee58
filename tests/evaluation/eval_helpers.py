"""Tiny data, a model trained in seconds, and models built to trip each sanity check."""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD, Attack, SearchState, Square
from robustkit.evaluation import RobustnessReport, SuiteAttack, evaluate
from robustkit.gradients import input_gradients
from robustkit.losses import cross_entropy
from robustkit.models import Classifier

SHAPE = (8, 8, 1)
CLASSES = 4


def quadrant_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images [n, 8, 8, 1] on the 8-bit grid whose class (0-3) is the bright 4x4 quadrant.

    Background codes ~50, the class quadrant ~200, uniform noise of +-25 codes.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    codes = np.full((n, 8, 8, 1), 50.0)
    for i, label in enumerate(y):
        top, left = 4 * (label // 2), 4 * (label % 2)
        codes[i, top : top + 4, left : left + 4] = 200.0
    codes += rng.integers(-25, 26, codes.shape)
    return (codes / 255).astype(np.float32), y.astype(np.int64)


@functools.lru_cache(maxsize=1)
def trained_mlp() -> keras.Model:
    """Flatten-Dense(16)-Dense(4) logits, trained a few seconds on quadrant data (~100%)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = quadrant_data(256, seed=1)
    model.fit(x, y, epochs=10, batch_size=32, verbose=0)
    return model


def healthy() -> Classifier:
    return Classifier(trained_mlp())


def wrapped(function: Any, **options: Any) -> Classifier:
    """A Classifier around a plain callable on the trained model's inputs."""
    return Classifier(function, input_shape=SHAPE, **options)


def softmax_outputs(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Probabilities whose logits the Classifier cannot unwrap (softmax inside a callable)."""
    return tf.nn.softmax(trained_mlp()(x, training=training))


def stop_gradient_outputs(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Logits with the input gradient cut (gradient masking by construction)."""
    return trained_mlp()(tf.stop_gradient(x), training=training)


def quantized_outputs(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Logits of the input rounded to 8 levels: zero gradient almost everywhere."""
    return trained_mlp()(tf.round(x * 8) / 8, training=training)


def dropout_outputs(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Logits with dropout on the input even at inference (a random forward pass)."""
    return trained_mlp()(tf.nn.dropout(x, rate=0.5), training=training)


def periodic_outputs(x: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Two classes decided by cos(2 pi (t - 0.5) / 0.4) of the mean intensity t (> 0: class 0).

    Images of mean 0.45 are class 0 with their boundary 0.075 below, so one step of size eps
    downward breaks them for eps in (0.075, 0.275) and lands on class 0 again at eps 0.35.
    """
    mean = tf.reduce_mean(tf.reshape(x, (tf.shape(x)[0], -1)), axis=1)
    score = 4.0 * tf.cos(2 * np.pi * (mean - 0.5) / 0.4)
    return tf.stack([score / 2, -score / 2], axis=1)


def periodic_data(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images of mean ~0.45 (class 0 under periodic_outputs), with small noise."""
    rng = np.random.default_rng(seed)
    x = 0.45 + rng.uniform(-0.01, 0.01, (n, *SHAPE))
    x -= x.mean(axis=(1, 2, 3), keepdims=True) - 0.45
    return x.astype(np.float32), np.zeros(n, np.int64)


class LeakyStep(Attack):
    """A deliberately wrong 'attack': one signed cross-entropy step of size eps, returned even
    when the clean image was already misclassified (no best-iterate bookkeeping), which can
    move misclassified images back to their true class."""

    def budget(self, num_classes: int) -> int:
        return 1

    def objective(self, logits, labels, targeted):
        return -cross_entropy(logits, labels)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        gradient = input_gradients(classifier, x, labels).gradient
        x_adv = tf.clip_by_value(x + eps * tf.sign(gradient), *classifier.bounds)
        logits = classifier.logits(x_adv)
        success = tf.argmax(logits, axis=1, output_type=tf.int32) != labels
        return SearchState(x_adv, logits, state.loss, success, tf.ones_like(labels))


def mislabelled_quadrants(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrant data with two labels shifted, so some examples start misclassified."""
    x, y = quadrant_data(n, seed)
    y[[1, n // 2]] = (y[[1, n // 2]] + 1) % CLASSES
    return x, y


@functools.lru_cache(maxsize=1)
def healthy_report() -> RobustnessReport:
    """Every check on the trained model with an adequate suite, eps 0.1 (robust: the quadrant
    contrast is large) and 0.3 (not robust); kept images and per-example records."""
    suite = [
        SuiteAttack("pgd-ce", PGD, {"steps": 20, "rel_step_size": 0.125}),
        SuiteAttack("square", Square, {"queries": 100}),
    ]
    return evaluate(
        healthy(),
        mislabelled_quadrants(48, seed=21),
        "linf",
        [0.1, 0.3],
        suite=suite,
        seed=3,
        check_samples=32,
        per_example=True,
        return_images=True,
    )


SHARDED_SUITE = [
    SuiteAttack("pgd-ce", PGD, {"steps": 5, "rel_step_size": 0.5}),
    SuiteAttack("pgd-targeted", PGD, {"steps": 5, "loss": "margin"}, top_k_targets=2),
    SuiteAttack("square", Square, {"queries": 30}),
]


def sharded_case() -> tuple[Classifier, np.ndarray, np.ndarray]:
    """A random small CNN and 18 random 8-bit images, three of them mislabelled: in chunks of
    4 examples (4, 4, 4, 4, 2) two replicas attack two full groups and one short one."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )
    classifier = Classifier(model)
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (18, *SHAPE)) / 255).astype(np.float32)
    y = classifier.predict_logits(x).argmax(1)
    y[:3] = (y[:3] + 1) % CLASSES
    return classifier, x, y


def sharded_report(
    classifier: Classifier, x: np.ndarray, y: np.ndarray, strategy: Any
) -> RobustnessReport:
    """The evaluation both distributed tests run: SHARDED_SUITE at eps 0.02 in chunks of 4,
    the single-step check, per-example records and images kept."""
    return evaluate(
        classifier,
        (x, y),
        "linf",
        [0.02],
        suite=SHARDED_SUITE,
        seed=2,
        strategy=strategy,
        batch_size=4,
        checks=["single_step"],
        check_samples=12,
        per_example=True,
        return_images=True,
    )
