"""Stateless gradient transforms against NumPy references; noise statistics; freezing; the
numerics check; the init/update protocol."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from opt_helpers import key, run

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
    """200,000 noise entries drawn on zero gradients at ``step``, and the declared variance."""
    zeros = [tf.zeros([300, 400]), tf.zeros([80000])]
    variables = [tf.Variable(z) for z in zeros]
    t = tf.constant(step, tf.int64)
    noisy, state = transform.update(zeros, transform.init(variables), variables, t, key(step, seed))
    assert state == ()
    return np.concatenate([n.numpy().ravel() for n in noisy]), float(transform.noise_stddev(t)) ** 2


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


def test_freeze_small_weights_zeroes_their_gradient_and_declares_the_mask() -> None:
    weights = tf.Variable([[0.05, -0.5], [-0.01, 2.0]])
    freeze = rko.freeze_small_weights(0.1)
    assert freeze.acts_after_step and freeze.init([weights]) == ()
    (gradient,), state = freeze.update([tf.ones([2, 2])], (), [weights], tf.constant(0), key())
    np.testing.assert_array_equal(gradient.numpy(), [[0.0, 1.0], [0.0, 1.0]])
    assert state == ()
    (scale,) = freeze.update_scale([weights])
    assert scale.multiplier == 1.0
    np.testing.assert_array_equal(scale.frozen.numpy(), [[True, False], [True, False]])


def test_noise_free_transforms_declare_no_noise_and_keep_no_state() -> None:
    variable = tf.Variable(tf.ones([3]))
    for transform in (rko.clip_by_value(1.0), rko.clip_by_global_norm(1.0), rko.check_numerics()):
        assert transform.init([variable]) == ()
        assert transform.noise_stddev(tf.constant(0)) is None
        assert not transform.acts_after_step


def test_check_numerics_names_the_bad_variable_only() -> None:
    good = tf.Variable(tf.zeros([2]), name="good_weights")
    bad = tf.Variable(tf.zeros([3]), name="bad_weights")
    gradients = [tf.ones([2]), tf.constant([1.0, np.inf, 0.0])]

    @tf.function
    def check(gradients):
        out, _ = rko.check_numerics().update(gradients, (), [good, bad], tf.constant(0), key())
        return out

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


def test_a_custom_stateful_transform_needs_only_init_and_update() -> None:
    """The protocol on its own: a running sum of the gradients, kept by the wrapper."""

    class RunningSum(rko.GradientTransform):
        def init(self, variables):
            return {"sums": [tf.zeros(v.shape, v.dtype) for v in variables]}

        def update(self, gradients, state, variables, step, seed):
            sums = [s + g for s, g in zip(state["sums"], gradients, strict=True)]
            return sums, {"sums": sums}

    variable = tf.Variable(tf.zeros([2]))
    optimizer = rko.Transformed(keras.optimizers.SGD(1.0), [RunningSum()])
    for gradient in ([1.0, 2.0], [3.0, -1.0], [0.5, 0.5]):
        optimizer.apply([tf.constant(gradient)], [variable])
    # Steps of -1, -3 and -3.5 in the first entry: minus the running sums 1, 4, 4.5.
    np.testing.assert_array_equal(variable.numpy(), [-(1 + 4 + 4.5), -(2 + 1 + 1.5)])
    (state,) = optimizer.transform_states()
    np.testing.assert_array_equal(state["sums"][0].numpy(), [4.5, 1.5])


def test_a_transform_of_the_old_kind_is_refused_with_the_way_forward() -> None:
    class OldStyle(rko.GradientTransform):
        def __call__(self, gradients, variables, context):
            return gradients

    with pytest.raises(InputError, match="no longer take a StepContext"):
        rko.Transformed(keras.optimizers.SGD(0.1), [OldStyle()])


def test_a_state_unlike_the_initial_one_is_refused() -> None:
    class Shrinking(rko.GradientTransform):
        def init(self, variables):
            return (tf.zeros([3]),)

        def update(self, gradients, state, variables, step, seed):
            return gradients, (tf.zeros([2]),)

    optimizer = rko.Transformed(keras.optimizers.SGD(0.1), [Shrinking()])
    with pytest.raises(InputError, match=r"state unlike the one its init gave.*\(2,\)"):
        optimizer.apply([tf.ones([3])], [tf.Variable(tf.zeros([3]))])
