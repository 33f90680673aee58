"""The training step against closed forms and finite differences."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_helpers import blobs, cross_entropy, linear_model, small_cnn, softmax, weights_of

from robustkit.attacks import FGSM, PGD
from robustkit.training import AdversarialTrainer
from robustkit.training.methods import training_attack

RNG = np.random.default_rng(3)
W = RNG.normal(size=(4, 3))
B = RNG.normal(size=3) * 0.1
X = RNG.uniform(0.05, 0.95, size=(8, 2, 2, 1)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])


def numpy_pgd(x: np.ndarray, y: np.ndarray, eps: float, step: float, steps: int) -> np.ndarray:
    """PGD without random start on the linear model (W, B), keeping each example's best iterate
    as robustkit does: adversarial iterates first, then the higher loss (iterates 0..steps)."""
    x = x.reshape(len(x), -1).astype(np.float64)
    onehot = np.eye(3)[y]
    best = x.copy()
    best_success = np.zeros(len(x), bool)
    best_loss = np.full(len(x), -np.inf)
    current = x.copy()
    for k in range(steps + 1):
        z = current @ W + B
        loss = cross_entropy(z, y)
        success = z.argmax(1) != y
        better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
        best[better], best_loss[better], best_success[better] = (
            current[better],
            loss[better],
            success[better],
        )
        if k == steps:
            break
        gradient = (softmax(z) - onehot) @ W.T  # d CE / d x
        moved = current + step * np.sign(gradient)
        current = np.clip(x + np.clip(moved - x, -eps, eps), 0.0, 1.0)
    return best


def test_one_pgd_step_on_linear_model_equals_hand_computed_update() -> None:
    model = linear_model(W, B, (2, 2, 1))
    attack = PGD("linf", 0.1, steps=3, step_size=0.04, random_start=False)
    trainer = AdversarialTrainer(model, keras.optimizers.SGD(0.5), attack, method="pgd")
    history = trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)

    x_adv = numpy_pgd(X, Y, eps=0.1, step=0.04, steps=3)
    z_adv = x_adv @ W + B
    residual = (softmax(z_adv) - np.eye(3)[Y]) / len(X)  # d mean CE / d logits
    grad_w, grad_b = x_adv.T @ residual, residual.sum(0)
    new_w, new_b = weights_of(model)
    np.testing.assert_allclose(new_w, W - 0.5 * grad_w, atol=2e-6)
    np.testing.assert_allclose(new_b, B - 0.5 * grad_b, atol=2e-6)

    z_clean = X.reshape(len(X), -1) @ W + B
    record = {name: values[0] for name, values in history.history.items()}
    np.testing.assert_allclose(record["adv_loss"], cross_entropy(z_adv, Y).mean(), rtol=1e-5)
    np.testing.assert_allclose(record["loss"], record["adv_loss"], rtol=1e-6)
    assert record["adv_accuracy"] == np.mean(z_adv.argmax(1) == Y)
    np.testing.assert_allclose(record["clean_loss"], cross_entropy(z_clean, Y).mean(), rtol=1e-5)
    assert record["clean_accuracy"] == np.mean(z_clean.argmax(1) == Y)
    norm = np.sqrt((grad_w**2).sum() + (grad_b**2).sum())
    np.testing.assert_allclose(record["grad_norm"], norm, rtol=1e-5)


def test_mixed_step_on_linear_model_weights_clean_and_adversarial_gradients() -> None:
    """mixed with weight w: the update follows (1 - w)·∇CE(clean) + w·∇CE(adversarial)."""
    model = linear_model(W, B, (2, 2, 1))
    attack = PGD("linf", 0.1, steps=3, step_size=0.04, random_start=False)
    trainer = AdversarialTrainer(
        model, keras.optimizers.SGD(0.5), attack, method="mixed", adversarial_weight=0.25
    )
    trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)

    def gradients(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        residual = (softmax(x @ W + B) - np.eye(3)[Y]) / len(X)
        return x.T @ residual, residual.sum(0)

    clean_w, clean_b = gradients(X.reshape(len(X), -1).astype(np.float64))
    adv_w, adv_b = gradients(numpy_pgd(X, Y, eps=0.1, step=0.04, steps=3))
    new_w, new_b = weights_of(model)
    np.testing.assert_allclose(new_w, W - 0.5 * (0.75 * clean_w + 0.25 * adv_w), atol=2e-6)
    np.testing.assert_allclose(new_b, B - 0.5 * (0.75 * clean_b + 0.25 * adv_b), atol=2e-6)


def test_fast_method_runs_fgsm_with_random_start_and_step_one_and_a_quarter_eps() -> None:
    attack = training_attack(PGD("linf", 0.3, steps=40), "fast", 0.3)
    assert isinstance(attack, FGSM)
    assert attack.random_start and not attack.early_stop
    assert attack.step_size == pytest.approx(0.375)
    halved = training_attack(PGD("l2", 2.0, steps=10, step_size=0.5), "pgd", 1.0)
    assert (halved.norm.name, halved.norm.eps, halved.step_size, halved.steps) == (
        "l2",
        1.0,
        0.25,
        10,
    )
    assert not halved.early_stop


def test_trades_with_beta_zero_equals_clean_training() -> None:
    x, y = blobs(32, seed=1)
    trained = small_cnn(seed=5)
    trainer = AdversarialTrainer(
        trained, keras.optimizers.Adam(0.01), PGD("linf", 0.2, steps=2), method="trades", beta=0.0
    )
    trainer.fit((x, y), 2, batch_size=16, shuffle=False)

    reference = small_cnn(seed=5)
    optimizer = keras.optimizers.Adam(0.01)
    for _ in range(2):
        for begin in (0, 16):
            with tf.GradientTape() as tape:
                logits = reference(x[begin : begin + 16], training=True)
                loss = tf.reduce_mean(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(y[begin : begin + 16], logits)
                )
            grads = tape.gradient(loss, reference.trainable_variables)
            optimizer.apply(grads, reference.trainable_variables)
    for got, expected in zip(weights_of(trained), weights_of(reference), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_input_gradient_penalty_update_matches_finite_differences() -> None:
    """With eps 0 the objective is CE + λ·||∇x CE||²; its weight gradient (double backprop)
    must match central differences of the float64 objective of the linear model."""
    lam, lr = 0.5, 0.1
    x = X.reshape(len(X), -1).astype(np.float64)

    def objective(w: np.ndarray, b: np.ndarray) -> float:
        z = x @ w + b
        input_gradient = (softmax(z) - np.eye(3)[Y]) @ w.T
        return float(np.mean(cross_entropy(z, Y) + lam * (input_gradient**2).sum(1)))

    params = np.concatenate([W.ravel(), B])
    unpack = lambda p: (p[:12].reshape(4, 3), p[12:])  # noqa: E731
    h = 1e-6
    numeric = np.array(
        [
            (objective(*unpack(params + h * e)) - objective(*unpack(params - h * e))) / (2 * h)
            for e in np.eye(len(params))
        ]
    )
    model = linear_model(W, B, (2, 2, 1))
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.SGD(lr),
        PGD("linf", 0.1, steps=2),
        gradient_penalty=lam,
        eps_schedule=lambda epoch: 0.0,
    )
    history = trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)
    new_w, new_b = weights_of(model)
    np.testing.assert_allclose(
        np.concatenate([new_w.ravel(), new_b]), params - lr * numeric, atol=3e-6
    )
    np.testing.assert_allclose(history.history["loss"][0], objective(W, B), rtol=1e-5)
    assert history.history["penalty"][0] > 0.01  # the penalty is a real part of the update


@pytest.mark.parametrize("attack_training_mode", [False, True])
def test_attack_leaves_batch_norm_statistics_alone(attack_training_mode: bool) -> None:
    """BatchNorm on the raw input: one training-mode pass on x_adv moves the moving mean to
    (1 - m)·mean(x_adv), within (1 - m)·eps of (1 - m)·mean(x). Attack passes in training mode
    would apply 1 - m^(passes) instead."""
    momentum, eps = 0.5, 0.05
    model = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.BatchNormalization(momentum=momentum),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.SGD(0.0),
        PGD("linf", eps, steps=5),
        attack_training_mode=attack_training_mode,
    )
    trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)
    moving_mean = float(model.layers[0].moving_mean.numpy()[0])
    one_pass = (1 - momentum) * X.mean()
    if attack_training_mode:
        assert moving_mean > one_pass + (1 - momentum) * eps + 0.1
    else:
        assert abs(moving_mean - one_pass) <= (1 - momentum) * eps + 1e-6
