"""Threat models: projection invariants, uniform random starts, grid snapping."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustkit import InputError
from robustkit.norms import L2, Linf, make_norm

deltas = arrays(
    np.float32,
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3)),
    elements=st.floats(-2, 2, width=32),
)
radii = st.floats(0.0, 1.5)


@settings(max_examples=40, deadline=None)
@given(delta=deltas, eps=radii, norm_class=st.sampled_from([Linf, L2]))
def test_projection_is_inside_idempotent_and_identity_inside(delta, eps, norm_class) -> None:
    norm = norm_class(eps)
    projected = norm.project(tf.constant(delta))
    assert np.all(norm.distance(projected).numpy() <= eps * (1 + 1e-6) + 1e-6)
    np.testing.assert_allclose(norm.project(projected).numpy(), projected.numpy(), atol=1e-6)
    inside = norm.distance(tf.constant(delta)).numpy() <= eps
    np.testing.assert_allclose(projected.numpy()[inside], delta[inside], atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(delta=deltas, eps=st.floats(0.01, 1.5))
def test_l2_projection_is_the_closest_point(delta, eps) -> None:
    """Closest point of the ball: radial scaling, so delta - projection is parallel to delta."""
    projected = L2(eps).project(tf.constant(delta)).numpy().reshape(len(delta), -1)
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    expected = flat * np.minimum(1, eps / np.maximum(norms, 1e-12))[:, None]
    np.testing.assert_allclose(projected, expected, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(delta=deltas, eps=st.floats(0.0, 1.0), norm_class=st.sampled_from([Linf, L2]))
def test_snap_to_grid_is_on_grid_and_inside(delta, eps, norm_class) -> None:
    spacing = 1 / 255
    norm = norm_class(eps)
    snapped = norm.snap_to_grid(tf.constant(delta), spacing).numpy()
    units = snapped / spacing
    np.testing.assert_allclose(units, np.round(units), atol=1e-3)
    assert np.all(norm.distance(tf.constant(snapped)).numpy() <= eps + 1e-6)


def test_linf_random_start_is_uniform_in_the_cube() -> None:
    sample = Linf(0.3).random_start((2000, 4, 4, 1), tf.constant([1, 2])).numpy()
    assert np.abs(sample).max() <= 0.3
    assert abs(sample.mean()) < 0.005
    np.testing.assert_allclose(sample.var(), 0.3**2 / 3, rtol=0.02)  # Var U(-a, a) = a²/3


def test_l2_random_start_is_uniform_in_volume() -> None:
    """Uniform in volume <=> (r / eps)^d ~ U(0, 1) and isotropic direction."""
    eps, shape = 0.7, (4000, 2, 2, 1)
    sample = L2(eps).random_start(shape, tf.constant([3, 4])).numpy().reshape(shape[0], -1)
    radius = np.linalg.norm(sample, axis=1)
    assert radius.max() <= eps * (1 + 1e-6)
    fraction = np.sort((radius / eps) ** sample.shape[1])
    uniform = (np.arange(1, len(fraction) + 1) - 0.5) / len(fraction)
    assert np.abs(fraction - uniform).max() < 0.03  # Kolmogorov-Smirnov distance
    np.testing.assert_allclose(sample.mean(0), 0, atol=0.02)


def test_same_seed_same_start_and_different_seed_differs() -> None:
    for norm in (Linf(0.1), L2(0.5)):
        a = norm.random_start((3, 4, 4, 1), tf.constant([5, 6])).numpy()
        b = norm.random_start((3, 4, 4, 1), tf.constant([5, 6])).numpy()
        c = norm.random_start((3, 4, 4, 1), tf.constant([5, 7])).numpy()
        assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_step_directions() -> None:
    gradient = tf.constant([[[[3.0], [-4.0]]], [[[0.0], [0.0]]]])
    np.testing.assert_array_equal(Linf(1).step_direction(gradient).numpy().ravel(), [1, -1, 0, 0])
    np.testing.assert_allclose(L2(1).step_direction(gradient).numpy().ravel(), [0.6, -0.8, 0, 0])


def test_bad_norm_arguments() -> None:
    with pytest.raises(InputError, match="eps"):
        Linf(-0.1)
    with pytest.raises(InputError, match="Unknown norm"):
        make_norm("l1", 0.1)
    with pytest.raises(InputError, match="eps"):
        L2(float("nan"))
