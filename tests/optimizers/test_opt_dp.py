"""DP-SGD step: per-example clipping vs a slow loop, noise statistics, seeding, accounting."""

import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustkit import InputError, RobustkitError
from robustkit import optimizers as rko

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def wide_model(seed: int = 0) -> keras.Model:
    """40,000 weights: enough entries to measure the noise std to within 2%."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((100,)), keras.layers.Dense(400, use_bias=False)])


def batch(shape: tuple[int, ...], n: int = 12, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def loop_gradients(model: keras.Model, x: np.ndarray, y: np.ndarray) -> list[list[np.ndarray]]:
    """Slow reference: one tape per example, float64 results."""
    per_example = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = LOSS(y[i : i + 1], model(x[i : i + 1], training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        per_example.append([g.numpy().astype(np.float64) for g in grads])
    return per_example


def test_per_example_gradients_match_one_tape_per_example() -> None:
    model = conv_model()
    x, y = batch((8, 8, 1))
    losses, grads = rko.per_example_gradients(model, LOSS, x, y, model.trainable_variables)
    expected = loop_gradients(model, x, y)
    for i, example in enumerate(expected):
        for got, want in zip(grads, example, strict=True):
            np.testing.assert_allclose(got[i].numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            losses[i].numpy(), LOSS(y[i : i + 1], model(x[i : i + 1])), rtol=1e-6
        )


per_example_arrays = st.tuples(st.integers(1, 6), st.integers(1, 3)).flatmap(
    lambda sizes: st.lists(
        arrays(
            np.float32,
            st.tuples(st.just(sizes[0]), st.integers(1, 4)),
            elements=st.floats(-5, 5, width=32),
        ),
        min_size=sizes[1],
        max_size=sizes[1],
    )
)


@settings(max_examples=40, deadline=None)
@given(gradients=per_example_arrays, bound=st.floats(0.05, 10.0))
def test_clip_per_example_matches_numpy_and_bounds_every_example(gradients, bound) -> None:
    clipped = [c.numpy() for c in rko.clip_per_example([tf.constant(g) for g in gradients], bound)]
    norms = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2, axis=1) for g in gradients))
    scale = bound / np.maximum(norms, bound)
    for got, g in zip(clipped, gradients, strict=True):
        np.testing.assert_allclose(got, g * scale[:, None], rtol=1e-6, atol=1e-6)
    clipped_norms = np.sqrt(sum(np.sum(c.astype(np.float64) ** 2, axis=1) for c in clipped))
    assert np.all(clipped_norms <= bound * (1 + 1e-6))
    np.testing.assert_allclose(clipped_norms, np.minimum(norms, bound), rtol=1e-6, atol=1e-6)


def test_privatized_gradient_without_noise_equals_the_slow_reference_loop() -> None:
    model = conv_model()
    x, y = batch((8, 8, 1))
    per_example = loop_gradients(model, x, y)
    norms = np.array([np.sqrt(sum(np.sum(g**2) for g in example)) for example in per_example])
    clip = float(np.median(norms))  # half of the examples are clipped, half are not
    expected = [
        sum(
            example[k] * min(1.0, clip / norm)
            for example, norm in zip(per_example, norms, strict=True)
        )
        / len(x)
        for k in range(len(model.trainable_variables))
    ]
    step = rko.DPSGDStep(
        model, LOSS, keras.optimizers.SGD(0.1), l2_norm_clip=clip, noise_multiplier=0.0
    )
    grads, losses = step.privatized_gradients(x, y)
    assert np.sum(norms > clip) >= 5 and np.sum(norms < clip) >= 5
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
    assert losses.shape == (len(x),)


def privatized(seed: int, noise_multiplier: float, x, y, steps_before: int = 0) -> np.ndarray:
    step = rko.DPSGDStep(
        wide_model(),
        keras.losses.MeanSquaredError(),
        keras.optimizers.SGD(0.0),
        l2_norm_clip=0.5,
        noise_multiplier=noise_multiplier,
        seed=seed,
    )
    step.steps.assign(steps_before)
    grads, _ = step.privatized_gradients(x, y)
    return grads[0].numpy()


def test_noise_is_gaussian_with_std_sigma_c_over_batch_and_seeded() -> None:
    x, y = batch((100,), n=8)
    y = np.random.default_rng(3).normal(size=(8, 400)).astype(np.float32)
    clean = privatized(1, 0.0, x, y)
    noisy = privatized(1, 1.3, x, y)
    standardized = (noisy.astype(np.float64) - clean) * 8 / (1.3 * 0.5)
    assert standardized.size == 40_000
    assert abs(standardized.mean()) < 5 / np.sqrt(standardized.size)
    np.testing.assert_allclose(standardized.std(), 1.0, rtol=0.02)
    assert privatized(1, 1.3, x, y).tobytes() == noisy.tobytes()
    assert np.mean(privatized(2, 1.3, x, y) == noisy) < 1e-3
    assert np.mean(privatized(1, 1.3, x, y, steps_before=1) == noisy) < 1e-3


def test_step_applies_the_privatized_gradient_and_does_not_retrace() -> None:
    model = conv_model()
    x, y = batch((8, 8, 1), n=16)
    step = rko.DPSGDStep(
        model, LOSS, keras.optimizers.SGD(0.5), l2_norm_clip=0.3, noise_multiplier=1.0, seed=4
    )
    for start in (0, 8):
        xb, yb = x[start : start + 8], y[start : start + 8]
        before = [v.numpy() for v in model.trainable_variables]
        grads, losses = step.privatized_gradients(xb, yb)
        loss = step(xb, yb)
        np.testing.assert_allclose(float(loss), float(np.mean(losses)), rtol=1e-6)
        for v, v0, g in zip(model.trainable_variables, before, grads, strict=True):
            np.testing.assert_allclose(v.numpy(), v0 - 0.5 * g.numpy(), rtol=1e-5, atol=1e-7)
    assert int(step.steps) == 2
    assert step._train_step.experimental_get_tracing_count() == 1


def test_same_seed_same_training_bytes() -> None:
    x, y = batch((8, 8, 1), n=8)

    def train(seed: int) -> bytes:
        model = conv_model()
        step = rko.DPSGDStep(
            model,
            LOSS,
            keras.optimizers.Adam(0.01),
            l2_norm_clip=1.0,
            noise_multiplier=1.1,
            seed=seed,
        )
        for _ in range(3):
            step(x, y)
        return b"".join(v.numpy().tobytes() for v in model.trainable_variables)

    assert train(5) == train(5)
    assert train(5) != train(6)


def test_bad_settings_are_refused() -> None:
    model = conv_model()
    for clip, sigma in ((0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(InputError):
            rko.DPSGDStep(
                model, LOSS, keras.optimizers.SGD(), l2_norm_clip=clip, noise_multiplier=sigma
            )
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(InputError, match="built"):
        rko.DPSGDStep(unbuilt, LOSS, keras.optimizers.SGD(), l2_norm_clip=1, noise_multiplier=1)


def gaussian_delta(epsilon: float, sigma: float) -> float:
    """Exact δ(ε) of one Gaussian mechanism, sensitivity 1, std σ (Balle & Wang 2018)."""

    def phi(t: float) -> float:
        return 0.5 * math.erfc(-t / math.sqrt(2))

    return phi(0.5 / sigma - epsilon * sigma) - math.exp(epsilon) * phi(
        -0.5 / sigma - epsilon * sigma
    )


def test_pld_epsilon_of_one_full_batch_step_is_the_gaussian_mechanism() -> None:
    spent = rko.dp_sgd_privacy(
        noise_multiplier=1.0, sample_rate=1.0, steps=1, delta=1e-5, accountant="pld"
    )
    # PLD accounting is tight up to its discretization, which only errs on the safe side.
    assert 0.97e-5 <= gaussian_delta(spent.epsilon, 1.0) <= 1e-5
    assert spent.to_dict()["accountant"] == "pld"


def test_rdp_bounds_pld_and_epsilon_grows_with_steps_and_falls_with_noise() -> None:
    def epsilon(accountant="rdp", steps=1000, sigma=1.1):
        return rko.dp_sgd_privacy(
            noise_multiplier=sigma,
            sample_rate=256 / 60_000,
            steps=steps,
            delta=1e-5,
            accountant=accountant,
        ).epsilon

    rdp, pld = epsilon("rdp"), epsilon("pld")
    assert pld <= rdp <= 1.5 * pld
    assert epsilon(steps=100) < rdp < epsilon(steps=10_000)
    assert epsilon(sigma=2.0) < rdp < epsilon(sigma=0.8)
    assert rko.dp_sgd_privacy(
        noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=1e-5
    ).epsilon == pytest.approx(0.0, abs=1e-9)


def test_step_reports_the_privacy_of_its_steps() -> None:
    model = conv_model()
    x, y = batch((8, 8, 1), n=8)
    step = rko.DPSGDStep(
        model, LOSS, keras.optimizers.SGD(0.1), l2_norm_clip=1.0, noise_multiplier=1.1
    )
    step(x, y)
    step(x, y)
    spent = step.privacy_spent(num_examples=800, batch_size=8, delta=1e-4)
    expected = rko.dp_sgd_privacy(noise_multiplier=1.1, sample_rate=0.01, steps=2, delta=1e-4)
    assert spent == expected and spent.steps == 2 and spent.epsilon > 0


@pytest.mark.parametrize(
    "arguments",
    [
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"delta": 0.0},
        {"steps": -1},
        {"steps": 2.5},
        {"noise_multiplier": -1.0},
        {"accountant": "moments"},
    ],
)
def test_accounting_refuses_bad_arguments(arguments) -> None:
    valid = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": 1e-5}
    with pytest.raises(InputError):
        rko.dp_sgd_privacy(**{**valid, **arguments})


def test_accounting_without_dp_accounting_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # import now raises ImportError
    with pytest.raises(RobustkitError, match=r"robustkit\[dp\]"):
        rko.dp_sgd_privacy(noise_multiplier=1.0, sample_rate=0.01, steps=10, delta=1e-5)
