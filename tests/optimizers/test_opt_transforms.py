"""Gradient transforms against NumPy references; noise statistics; freezing; numerics check."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustkit import InputError
from robustkit import optimizers as rko

gradient_lists = st.lists(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 5)),
        elements=st.floats(-10, 10, width=32),
    ),
    min_size=1,
    max_size=4,
)
bounds = st.floats(0.01, 20.0)


def context(step: int = 0, seed: int = 0, variable_count: int = 1) -> rko.StepContext:
    return rko.StepContext(
        step=tf.constant(step, tf.int64),
        key=tf.constant([seed, step], tf.int64),
        noise_variance=tf.constant(0.0),
        frozen=[None] * variable_count,
    )


def run(transform: rko.GradientTransform, gradients: list[np.ndarray]) -> list[np.ndarray]:
    tensors = [tf.constant(g) for g in gradients]
    variables = [tf.Variable(tf.ones_like(g)) for g in tensors]
    out = transform(tensors, variables, context(variable_count=len(tensors)))
    return [t.numpy() for t in out]


@settings(max_examples=40, deadline=None)
@given(gradients=gradient_lists, bound=bounds)
def test_clip_by_value_matches_numpy(gradients, bound) -> None:
    for got, g in zip(run(rko.clip_by_value(bound), gradients), gradients, strict=True):
        limit = np.float32(bound)
        np.testing.assert_allclose(got, np.clip(g, -limit, limit), atol=1e-6)
        assert np.abs(got).max() <= limit


@settings(max_examples=40, deadline=None)
@given(gradients=gradient_lists, bound=bounds)
def test_clip_by_norm_matches_numpy_per_tensor(gradients, bound) -> None:
    for got, g in zip(run(rko.clip_by_norm(bound), gradients), gradients, strict=True):
        g64 = g.astype(np.float64)
        expected = g64 * bound / max(np.linalg.norm(g64), bound)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        assert np.linalg.norm(got.astype(np.float64)) <= bound * (1 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(gradients=gradient_lists, bound=bounds)
def test_clip_by_global_norm_matches_numpy(gradients, bound) -> None:
    got = run(rko.clip_by_global_norm(bound), gradients)
    total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in gradients))
    scale = bound / max(total, bound)
    for clipped, g in zip(got, gradients, strict=True):
        np.testing.assert_allclose(clipped, g.astype(np.float64) * scale, rtol=1e-6, atol=1e-6)
    got_total = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in got))
    np.testing.assert_allclose(got_total, min(total, bound), rtol=1e-6, atol=1e-6)


def test_clipping_leaves_small_gradients_untouched() -> None:
    small = [np.array([[0.3, -0.4]], np.float32)]  # norm 0.5
    for transform in (rko.clip_by_norm(1.0), rko.clip_by_global_norm(1.0), rko.clip_by_value(1.0)):
        np.testing.assert_array_equal(run(transform, small)[0], small[0])


def noise_sample(
    transform: rko.GradientTransform, step: int, seed: int
) -> tuple[np.ndarray, float]:
    """200,000 noise entries drawn on zero gradients at ``step``, and the recorded variance."""
    zeros = [tf.zeros([300, 400]), tf.zeros([80000])]
    variables = [tf.Variable(z) for z in zeros]
    ctx = context(step, seed, variable_count=2)
    noisy = transform(zeros, variables, ctx)
    return np.concatenate([n.numpy().ravel() for n in noisy]), float(ctx.noise_variance)


@pytest.mark.parametrize(
    ("transform", "step", "expected_std"),
    [
        (rko.gaussian_noise(0.3), 0, 0.3),
        (rko.gaussian_noise(0.3), 500, 0.3),
        (rko.annealed_gaussian_noise(0.5), 0, np.sqrt(0.5)),
        (rko.annealed_gaussian_noise(0.5), 9, np.sqrt(0.5 / 10**0.55)),
        (rko.annealed_gaussian_noise(0.01, gamma=1.0), 99, np.sqrt(0.01 / 100)),
    ],
)
def test_noise_has_zero_mean_and_the_scheduled_std(transform, step, expected_std) -> None:
    sample, variance = noise_sample(transform, step, seed=7)
    assert sample.size == 200_000
    assert abs(sample.mean()) < 5 * expected_std / np.sqrt(sample.size)
    np.testing.assert_allclose(sample.std(), expected_std, rtol=0.02)
    np.testing.assert_allclose(variance, expected_std**2, rtol=1e-6)


def test_noise_is_identical_for_a_seed_and_differs_across_seeds_and_steps() -> None:
    transform = rko.annealed_gaussian_noise(0.1)
    first, _ = noise_sample(transform, 3, seed=11)
    again, _ = noise_sample(transform, 3, seed=11)
    assert first.tobytes() == again.tobytes()
    other_seed, _ = noise_sample(transform, 3, seed=12)
    other_step, _ = noise_sample(transform, 4, seed=11)
    assert np.mean(first == other_seed) < 1e-3
    # A later step draws fresh noise, not a rescaled copy of the same draw.
    assert abs(np.corrcoef(first, other_step)[0, 1]) < 0.02


def test_freeze_small_weights_zeroes_their_gradient_and_records_the_mask() -> None:
    weights = tf.Variable([[0.05, -0.5], [-0.01, 2.0]])
    ctx = context()
    (gradient,) = rko.freeze_small_weights(0.1)([tf.ones([2, 2])], [weights], ctx)
    np.testing.assert_array_equal(gradient.numpy(), [[0.0, 1.0], [0.0, 1.0]])
    mask, values = ctx.frozen[0]
    np.testing.assert_array_equal(mask.numpy(), [[True, False], [True, False]])
    np.testing.assert_array_equal(values.numpy(), weights.numpy())


def test_check_numerics_names_the_bad_variable_only() -> None:
    good = tf.Variable(tf.zeros([2]), name="good_weights")
    bad = tf.Variable(tf.zeros([3]), name="bad_weights")
    gradients = [tf.ones([2]), tf.constant([1.0, np.inf, 0.0])]

    @tf.function
    def check(gradients):
        return rko.check_numerics()(gradients, [good, bad], context(variable_count=2))

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        check(gradients)
    message = str(caught.value)
    assert rko.NON_FINITE_MESSAGE in message
    assert "bad_weights" in message
    assert "good_weights" not in message
    finite = check([tf.ones([2]), tf.ones([3])])
    np.testing.assert_array_equal(finite[1].numpy(), np.ones(3))


@pytest.mark.parametrize(
    "make",
    [
        lambda: rko.clip_by_value(0.0),
        lambda: rko.clip_by_norm(-1.0),
        lambda: rko.clip_by_global_norm(float("nan")),
        lambda: rko.gaussian_noise(-0.1),
        lambda: rko.annealed_gaussian_noise(0.1, gamma=float("inf")),
        lambda: rko.freeze_small_weights(0.0),
    ],
)
def test_bad_settings_are_refused(make) -> None:
    with pytest.raises(InputError):
        make()


def test_config_round_trip() -> None:
    transform = rko.annealed_gaussian_noise(0.3, gamma=0.7)
    again = type(transform).from_config(transform.get_config())
    assert again.get_config() == {"eta": 0.3, "gamma": 0.7}
    assert repr(again) == "AnnealedGaussianNoise(eta=0.3, gamma=0.7)"
