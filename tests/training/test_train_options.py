"""The training options against their papers' definitions: N-FGSM, GradAlign, MART and AWP
on linear models (NumPy references, finite differences) and bit-identical weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_helpers import blobs, cross_entropy, linear_model, softmax, weights_of

from robustkit.attacks import FGSM, PGD
from robustkit.errors import InputError
from robustkit.gradients import input_gradient_alignment
from robustkit.losses import cross_entropy as tf_cross_entropy
from robustkit.models import Classifier
from robustkit.norms import Linf
from robustkit.training import NFGSM, AdversarialTrainer
from robustkit.training import methods as training_methods
from robustkit.training.fast import alignment_point
from robustkit.training.methods import mart_loss, training_attack

RNG = np.random.default_rng(11)
W = RNG.normal(size=(4, 3))
B = RNG.normal(size=3) * 0.1
X = RNG.uniform(0.3, 0.7, size=(8, 2, 2, 1)).astype(np.float32)
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
ONEHOT = np.eye(3)[Y]
SEED = tf.constant([5, 9], tf.int32)


def input_gradient(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∇x CE of the linear model (w, b) per example, x [N, D] (float64)."""
    return (softmax(x @ w + b) - ONEHOT) @ w.T


def linear_update(x_adv: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Gradients (dW, dB) of mean CE at x_adv [N, D] for the linear model (w, b)."""
    residual = (softmax(x_adv @ w + b) - ONEHOT) / len(x_adv)
    return x_adv.T @ residual, residual.sum(0)


def central_differences(objective, params: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return np.array(
        [
            (objective(params + h * e) - objective(params - h * e)) / (2 * h)
            for e in np.eye(len(params))
        ]
    )


def unpack(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return params[:12].reshape(4, 3), params[12:]


PARAMS = np.concatenate([W.ravel(), B])


def trained_params(model: keras.Model) -> np.ndarray:
    new_w, new_b = weights_of(model)
    return np.concatenate([new_w.ravel(), new_b])


# ------------------------------------------------------------------------------ N-FGSM


def training_adversarials(attack: PGD, method: str, eps: float) -> np.ndarray:
    """float64 [N, D]: the points the trainer's attack for ``method`` finds on the linear
    model (W, B) from X, flattened."""
    classifier = Classifier(linear_model(W, B, (2, 2, 1)))
    found = training_attack(attack, method, eps).run(classifier, X, Y, SEED).x_adv.numpy()
    return found.reshape(len(X), -1).astype(np.float64)


def test_n_fgsm_noise_and_step_follow_the_paper_on_a_linear_model() -> None:
    """η ~ U[-k·eps, k·eps] per pixel, x_adv = clip(x + η + α·sign(∇x CE(x + η))) with α = eps:
    no projection to the eps-ball, only the image bounds."""
    eps, x = 0.1, RNG.uniform(0.3, 0.7, size=(64, 2, 2, 1)).astype(np.float32)
    y = RNG.integers(0, 3, size=64)
    classifier = Classifier(linear_model(W, B, (2, 2, 1)))
    x_noisy, x_adv = NFGSM().examples(
        classifier, Linf(eps), tf_cross_entropy, x, tf.constant(y, tf.int32), SEED, eps
    )
    eta = (x_noisy.numpy() - x).ravel()
    assert np.abs(eta).max() <= 2 * eps + 1e-6
    assert 0.4 < np.mean(np.abs(eta) > eps) < 0.6  # half the mass lies outside the eps-ball
    np.testing.assert_allclose(np.quantile(eta, [0.1, 0.5, 0.9]), [-0.16, 0.0, 0.16], atol=0.03)

    flat_noisy = x_noisy.numpy().reshape(64, -1).astype(np.float64)
    residual = softmax(flat_noisy @ W + B) - np.eye(3)[y]
    expected = np.clip(flat_noisy + eps * np.sign(residual @ W.T), 0.0, 1.0)
    np.testing.assert_allclose(x_adv.numpy().reshape(64, -1), expected, atol=1e-6)
    assert np.abs(x_adv.numpy() - x).max() > 1.5 * eps  # not projected back to the ball

    # Near the bounds the noisy and the final points are clipped to [0, 1], nothing else.
    dark = np.full((16, 2, 2, 1), 0.02, np.float32)
    x_noisy, x_adv = NFGSM(noise=2.0, step=1.5).examples(
        classifier, Linf(eps), tf_cross_entropy, dark, tf.zeros(16, tf.int32), SEED, eps
    )
    assert x_noisy.numpy().min() == 0.0 and x_adv.numpy().min() == 0.0
    moved = x_adv.numpy() - x_noisy.numpy()
    inside = (x_adv.numpy() > 0) & (x_noisy.numpy() > 0)
    np.testing.assert_allclose(np.abs(moved[inside]), 1.5 * eps, atol=1e-6)


def test_n_fgsm_trains_on_its_unprojected_point() -> None:
    """Without noise (k = 0) the N-FGSM point is x + α·sign(∇x CE(x)), α = 1.5·eps outside the
    ball; one SGD step of the fast method follows CE at that point."""
    eps, lr = 0.1, 0.5
    model = linear_model(W, B, (2, 2, 1))
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.SGD(lr),
        PGD("linf", eps),
        method="fast",
        n_fgsm=NFGSM(noise=0.0, step=1.5),
        overfit_guard=None,
    )
    trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)
    x = X.reshape(len(X), -1).astype(np.float64)
    x_adv = np.clip(x + 1.5 * eps * np.sign(input_gradient(x, W, B)), 0.0, 1.0)
    grad_w, grad_b = linear_update(x_adv, W, B)
    new_w, new_b = weights_of(model)
    np.testing.assert_allclose(new_w, W - lr * grad_w, atol=2e-6)
    np.testing.assert_allclose(new_b, B - lr * grad_b, atol=2e-6)


def test_bad_fast_options_are_refused() -> None:
    model = linear_model(W, B, (2, 2, 1))
    attack = PGD("linf", 0.1)
    with pytest.raises(InputError, match="method='fast'"):
        AdversarialTrainer(model, keras.optimizers.SGD(0.1), attack, n_fgsm=NFGSM())
    with pytest.raises(InputError, match="NFGSM noise"):
        NFGSM(noise=-1.0)
    with pytest.raises(InputError, match="grad_align"):
        AdversarialTrainer(model, keras.optimizers.SGD(0.1), attack, grad_align=-0.1)
    with pytest.raises(InputError, match="awp"):
        AdversarialTrainer(model, keras.optimizers.SGD(0.1), attack, awp=float("nan"))


def test_the_automatic_guard_stops_plain_fgsm_rs_and_watches_the_cured_fast_methods() -> None:
    """'auto' stops the plain fast method, only records for N-FGSM and GradAlign (whose
    training attack stays well above the validation attack on healthy runs), is off else."""
    attack = PGD("linf", 0.1)

    def automatic_action(**options) -> str | None:
        model = linear_model(W, B, (2, 2, 1))
        trainer = AdversarialTrainer(model, keras.optimizers.SGD(0.1), attack, **options)
        return None if trainer.guard is None else trainer.guard.action

    assert automatic_action(method="fast") == "stop"
    assert automatic_action(method="fast", n_fgsm=NFGSM()) == "monitor"
    assert automatic_action(method="fast", grad_align=0.2) == "monitor"
    assert automatic_action(method="fast", grad_align=0.2, overfit_guard="stop") == "stop"
    assert automatic_action(method="pgd") is None and automatic_action(method="trades") is None


# ------------------------------------------------------------------------------ GradAlign


def numpy_misalignment(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, delta: np.ndarray
) -> np.ndarray:
    """1 - cos(∇x CE(x), ∇x CE(x + δ)) per example for the linear model (float64)."""
    first, second = input_gradient(x, w, b), input_gradient(x + delta, w, b)
    cosine = (
        (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    )
    return 1.0 - cosine


def test_grad_align_regulariser_and_its_weight_gradient_match_finite_differences() -> None:
    x = X.reshape(len(X), -1).astype(np.float64)
    delta = RNG.uniform(-0.3, 0.3, size=x.shape)
    model = linear_model(W, B, (2, 2, 1))
    classifier = Classifier(model)
    images = X
    shifted = (x + delta).reshape(X.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        cosine, clean = input_gradient_alignment(classifier, images, shifted, tf.constant(Y))
        value = tf.reduce_mean(1.0 - cosine)
    gradients = tape.gradient(value, model.trainable_variables)
    np.testing.assert_allclose(1.0 - cosine.numpy(), numpy_misalignment(W, B, x, delta), atol=1e-6)
    np.testing.assert_allclose(
        clean.gradient.numpy().reshape(x.shape), input_gradient(x, W, B), atol=1e-6
    )
    numeric = central_differences(lambda p: numpy_misalignment(*unpack(p), x, delta).mean(), PARAMS)
    got = np.concatenate([g.numpy().ravel() for g in gradients])
    np.testing.assert_allclose(got, numeric, atol=2e-5)
    assert np.abs(numeric).max() > 1e-3  # the regulariser really depends on the weights

    # A zero input gradient has no direction: cosine 1, and a finite (zero) weight gradient.
    zero_model = linear_model(np.zeros((4, 3)), np.zeros(3), (2, 2, 1))
    with tf.GradientTape() as tape:
        cosine, _ = input_gradient_alignment(
            Classifier(zero_model), images, shifted, tf.constant(Y)
        )
        total = tf.reduce_sum(cosine)
    zero_gradients = tape.gradient(total, zero_model.trainable_variables)
    assert np.all(cosine.numpy() == 1.0)
    assert all(np.all(np.isfinite(g.numpy())) for g in zero_gradients)


def test_grad_align_point_is_uniform_in_the_ball_and_not_clipped() -> None:
    x = np.zeros((32, 4, 4, 1), np.float32)
    delta = (alignment_point(Linf(0.3), x, SEED, 0.3).numpy() - x).ravel()
    assert np.abs(delta).max() <= 0.3 and delta.min() < -0.25  # below the bounds' 0: not clipped
    np.testing.assert_allclose(np.quantile(delta, [0.25, 0.5, 0.75]), [-0.15, 0.0, 0.15], atol=0.03)


def test_grad_align_training_step_matches_finite_differences(monkeypatch) -> None:
    """FGSM from the clean point + λ·(1 - cos): the SGD step follows the central differences of
    mean(CE(x_adv) + λ·(1 - cos(∇x CE(x), ∇x CE(x + δ)))), x_adv held fixed (no gradient)."""
    eps, lam, lr = 0.1, 0.7, 0.2
    x = X.reshape(len(X), -1).astype(np.float64)
    delta = RNG.uniform(-eps, eps, size=x.shape)
    monkeypatch.setattr(
        training_methods,
        "alignment_point",
        lambda norm, images, seed, radius: images + delta.reshape(X.shape).astype(np.float32),
    )
    model = linear_model(W, B, (2, 2, 1))
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.SGD(lr),
        FGSM("linf", eps),
        method="fast",
        grad_align=lam,
        overfit_guard=None,
    )
    history = trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)
    x_adv = (
        training_attack(FGSM("linf", eps), "fast", eps)
        .run(Classifier(linear_model(W, B, (2, 2, 1))), X, Y, SEED)
        .x_adv.numpy()
        .reshape(x.shape)
        .astype(np.float64)
    )

    def objective(params: np.ndarray) -> float:
        w, b = unpack(params)
        adversarial = cross_entropy(x_adv @ w + b, Y)
        return float(np.mean(adversarial + lam * numpy_misalignment(w, b, x, delta)))

    numeric = central_differences(objective, PARAMS)
    np.testing.assert_allclose(trained_params(model), PARAMS - lr * numeric, atol=3e-6)
    np.testing.assert_allclose(history.history["loss"][0], objective(PARAMS), rtol=1e-5)
    expected_misalignment = numpy_misalignment(W, B, x, delta).mean()
    np.testing.assert_allclose(history.history["misalignment"][0], expected_misalignment, rtol=1e-4)


# ------------------------------------------------------------------------------ MART


def numpy_mart(clean: np.ndarray, adv: np.ndarray, y: np.ndarray, beta: float) -> np.ndarray:
    """Wang et al. (2020) eq. 9 per example, float64."""
    p_adv, p_clean = softmax(adv), softmax(clean)
    rows = np.arange(len(y))
    masked = np.where(np.eye(adv.shape[1], dtype=bool)[y], -np.inf, p_adv)
    runner_up = masked.argmax(1)
    bce = -np.log(p_adv[rows, y]) - np.log(1.0 - p_adv[rows, runner_up])
    kl = (p_clean * (np.log(p_clean) - np.log(p_adv))).sum(1)
    return bce + beta * kl * (1.0 - p_clean[rows, y])


def test_mart_loss_matches_a_numpy_reference_on_fixed_logits() -> None:
    clean = RNG.normal(size=(7, 4)) * 2.0
    adv = RNG.normal(size=(7, 4)) * 2.0
    adv[0] = [9.0, -3.0, 0.5, 8.0]  # the true class 0 is the adversarial argmax
    adv[1] = [-4.0, 12.0, 1.0, -2.0]  # confident and wrong: 1 - p_runner_up is tiny
    y = np.array([0, 2, 1, 3, 0, 2, 1])
    for beta in (0.0, 6.0):
        got = mart_loss(
            tf.constant(clean, tf.float32), tf.constant(adv, tf.float32), tf.constant(y), beta
        ).numpy()
        np.testing.assert_allclose(got, numpy_mart(clean, adv, y, beta), rtol=2e-5)


def test_mart_training_step_matches_finite_differences() -> None:
    eps, beta, lr = 0.1, 6.0, 0.3
    attack = PGD("linf", eps, steps=3, step_size=0.04, random_start=False)
    x = X.reshape(len(X), -1).astype(np.float64)
    x_adv = training_adversarials(attack, "mart", eps)
    model = linear_model(W, B, (2, 2, 1))
    trainer = AdversarialTrainer(model, keras.optimizers.SGD(lr), attack, method="mart", beta=beta)
    history = trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)

    def objective(params: np.ndarray) -> float:
        w, b = unpack(params)
        return float(np.mean(numpy_mart(x @ w + b, x_adv @ w + b, Y, beta)))

    numeric = central_differences(objective, PARAMS)
    np.testing.assert_allclose(trained_params(model), PARAMS - lr * numeric, atol=3e-6)
    np.testing.assert_allclose(history.history["loss"][0], objective(PARAMS), rtol=1e-5)


# ------------------------------------------------------------------------------ AWP


def dropout_bn_cnn(seed: int) -> keras.Model:
    """A tiny CNN with BatchNorm and dropout: state that AWP's extra pass must not touch."""
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            layers.Conv2D(4, 3, activation="tanh"),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dropout(0.3),
            layers.Dense(3),
        ]
    )


def test_awp_of_radius_zero_gives_the_weights_of_training_without_it_bit_for_bit() -> None:
    x, y = blobs(32, seed=4)
    results = []
    for awp in (None, 0.0):
        model = dropout_bn_cnn(seed=3)
        trainer = AdversarialTrainer(
            model, keras.optimizers.Adam(0.01), PGD("linf", 0.1, steps=2), awp=awp, seed=2
        )
        history = trainer.fit((x, y), 2, batch_size=16)
        results.append((weights_of(model), history.history["loss"]))
    (plain, plain_loss), (perturbed, perturbed_loss) = results
    for got, want in zip(perturbed, plain, strict=True):  # BatchNorm statistics included
        np.testing.assert_array_equal(got, want)
    assert perturbed_loss == plain_loss


def test_awp_step_takes_the_gradient_at_the_perturbed_kernel() -> None:
    """v = γ·||W||·G/||G|| for the kernel W (G = ∇W mean CE(x_adv)), none for the bias; the SGD
    step applies ∇ mean CE(x_adv) at (W + v, B) to (W, B)."""
    eps, gamma, lr = 0.1, 0.05, 0.5
    attack = PGD("linf", eps, steps=3, step_size=0.04, random_start=False)
    x_adv = training_adversarials(attack, "pgd", eps)
    model = linear_model(W, B, (2, 2, 1))
    trainer = AdversarialTrainer(model, keras.optimizers.SGD(lr), attack, awp=gamma)
    history = trainer.fit((X, Y), 1, batch_size=len(X), shuffle=False)

    ascent, _ = linear_update(x_adv, W, B)
    shift = gamma * np.linalg.norm(W) * ascent / np.linalg.norm(ascent)
    grad_w, grad_b = linear_update(x_adv, W + shift, B)
    new_w, new_b = weights_of(model)
    np.testing.assert_allclose(new_w, W - lr * grad_w, atol=2e-6)
    np.testing.assert_allclose(new_b, B - lr * grad_b, atol=2e-6)
    plain_w, _ = linear_update(x_adv, W, B)
    assert np.abs(lr * (grad_w - plain_w)).max() > 1e-3  # the perturbation changed the step
    adv_loss = cross_entropy(x_adv @ (W + shift) + B, Y).mean()  # metrics are the perturbed pass
    np.testing.assert_allclose(history.history["adv_loss"][0], adv_loss, rtol=1e-5)


def test_awp_perturbation_is_removed_exactly_after_each_step() -> None:
    """With a zero learning rate the kernels end bit-identical to where they started."""
    x, y = blobs(32, seed=4)
    model = dropout_bn_cnn(seed=3)
    before = [v.numpy() for v in model.trainable_variables]
    trainer = AdversarialTrainer(
        model, keras.optimizers.SGD(0.0), PGD("linf", 0.1, steps=2), awp=0.5, seed=2
    )
    history = trainer.fit((x, y), 1, batch_size=16)
    for got, want in zip(model.trainable_variables, before, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert history.history["grad_norm"][0] > 0  # there was a gradient to apply


def test_awp_and_ema_under_two_replicas_give_the_weights_of_one_device(run_fresh) -> None:
    """AWP's ascent gradient is summed over the replicas, so both perturb alike; the averages
    are mirrored like the weights."""
    report = run_fresh(Path(__file__).with_name("training_options_distributed_worker.py"))
    assert report["replicas"] == 2
    assert report["weight_change"] > 0.05
    assert report["weight_difference"] < 1e-5
    for name, difference in report["metric_difference"].items():
        assert difference < 1e-5, name
