"""The stateful transforms against NumPy references over many steps: clipping at a running
quantile of global norms, and top-k sparsification with error feedback."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from opt_helpers import run_steps

from robustkit import InputError
from robustkit import optimizers as rko

SHAPES = [(4, 5), (5,), (2, 3, 3)]


def gradient_steps(count: int, seed: int = 0, spread: float = 1.5) -> list[list[np.ndarray]]:
    """Gradients whose global norm varies over orders of magnitude from step to step."""
    rng = np.random.default_rng(seed)
    return [
        [(rng.normal(size=s) * np.exp(rng.normal(0, spread))).astype(np.float32) for s in SHAPES]
        for _ in range(count)
    ]


def np_global_norm(gradients: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in gradients))


@pytest.mark.parametrize(("quantile", "window"), [(0.5, 5), (0.1, 3), (0.9, 4), (1.0, 6), (0.3, 1)])
def test_running_quantile_clip_matches_numpy(quantile, window) -> None:
    steps = gradient_steps(14)
    outputs, (norms, count) = run_steps(rko.clip_by_running_quantile(quantile, window), steps)
    history: list[float] = []
    clipped = 0
    for gradients, got in zip(steps, outputs, strict=True):
        norm = np_global_norm(gradients)
        history.append(norm)
        threshold = np.quantile(history[-window:], quantile)  # linear interpolation
        scale = 1.0 if norm <= threshold else threshold / norm
        clipped += scale < 1
        for g, out in zip(gradients, got, strict=True):
            np.testing.assert_allclose(out, g.astype(np.float64) * scale, rtol=2e-6, atol=1e-7)
    assert int(count) == len(steps)
    # The ring buffer holds the last `window` norms.
    np.testing.assert_allclose(np.sort(norms.numpy()), np.sort(history[-window:]), rtol=1e-6)
    if quantile < 1 and window > 1:
        assert clipped > 0
    else:
        assert clipped == 0  # q = 1, or a window of only this step's norm: never clipped


def test_running_quantile_never_clips_the_first_step_and_skips_non_finite_norms() -> None:
    steps = gradient_steps(4)
    steps[2] = [g.copy() for g in steps[2]]
    steps[2][0][0, 0] = np.inf
    outputs, (norms, count) = run_steps(rko.clip_by_running_quantile(0.5, window=3), steps)
    np.testing.assert_array_equal(outputs[0][0], steps[0][0])
    assert all(np.all(np.isnan(g)) for g in outputs[2])  # as clip_by_global_norm does
    assert int(count) == 3  # the infinite norm was not recorded
    finite = [np_global_norm(s) for i, s in enumerate(steps) if i != 2]
    np.testing.assert_allclose(np.sort(norms.numpy()), np.sort(finite), rtol=1e-6)
    threshold = np.quantile(finite, 0.5)
    scale = min(1.0, threshold / finite[-1])
    np.testing.assert_allclose(outputs[3][1], steps[3][1] * scale, rtol=2e-6)


def np_top_k(accumulated: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference split: the k largest |entries| (ties: lower flat index first) and the rest."""
    flat = accumulated.ravel()
    k = max(1, math.ceil(fraction * flat.size))
    chosen = np.argsort(-np.abs(flat), kind="stable")[:k]
    kept = np.zeros_like(flat)
    kept[chosen] = flat[chosen]
    rest = flat.copy()
    rest[chosen] = 0
    return kept.reshape(accumulated.shape), rest.reshape(accumulated.shape)


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 1.0])
def test_top_k_with_error_feedback_matches_numpy_exactly(fraction) -> None:
    steps = gradient_steps(6, seed=1, spread=0.5)
    # Ties at the cut (first step, nothing carried yet): all magnitudes 1, kept in index order.
    steps[0][0][:] = np.sign(steps[0][0])
    transform = rko.top_k_sparsify(fraction)
    outputs, state = run_steps(transform, steps)
    remainders = [np.zeros(s, np.float32) for s in SHAPES]
    for gradients, got in zip(steps, outputs, strict=True):
        for i, (g, out) in enumerate(zip(gradients, got, strict=True)):
            accumulated = g + remainders[i]  # float32, as in the transform
            kept, rest = np_top_k(accumulated, fraction)
            assert out.tobytes() == kept.tobytes()
            # The kept part and the carried remainder add up to gradient + previous remainder.
            np.testing.assert_array_equal(out + rest, accumulated)
            assert np.count_nonzero(out) <= transform.keep_count(g.size)
            remainders[i] = rest
    for carried, want in zip(state, remainders, strict=True):
        assert carried.numpy().tobytes() == want.tobytes()
    if fraction == 1.0:
        assert all(not np.any(r) for r in remainders)


def test_top_k_without_error_feedback_drops_the_rest_and_keeps_no_state() -> None:
    steps = gradient_steps(3, seed=2)
    transform = rko.top_k_sparsify(0.2, error_feedback=False)
    outputs, state = run_steps(transform, steps)
    assert state == ()
    for gradients, got in zip(steps, outputs, strict=True):
        for g, out in zip(gradients, got, strict=True):
            assert out.tobytes() == np_top_k(g, 0.2)[0].tobytes()


def test_error_feedback_delivers_every_gradient_entry_eventually() -> None:
    """With SGD(1), the weights move by minus (all gradients - what is still carried)."""
    rng = np.random.default_rng(3)
    variable = tf.Variable(tf.zeros([50]))
    optimizer = rko.Transformed(keras.optimizers.SGD(1.0), [rko.top_k_sparsify(0.1)])
    total = np.zeros(50, np.float64)
    for _ in range(8):
        gradient = rng.normal(size=50).astype(np.float32)
        total += gradient
        optimizer.apply([tf.constant(gradient)], [variable])
    (carried,) = optimizer.transform_states()[0]
    np.testing.assert_allclose(-variable.numpy() + carried.numpy(), total, atol=1e-5)
    assert np.count_nonzero(carried.numpy()) > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: rko.clip_by_running_quantile(0.0),
        lambda: rko.clip_by_running_quantile(1.5),
        lambda: rko.clip_by_running_quantile(0.5, window=0),
        lambda: rko.clip_by_running_quantile(0.5, window=2.0),
        lambda: rko.top_k_sparsify(0.0),
        lambda: rko.top_k_sparsify(1.1),
    ],
)
def test_bad_settings_are_refused(make) -> None:
    with pytest.raises(InputError):
        make()


def test_configs_round_trip_through_keras_serialization() -> None:
    for transform in (
        rko.clip_by_running_quantile(0.8, window=50),
        rko.top_k_sparsify(0.01, error_feedback=False),
    ):
        again = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(transform)
        )
        assert type(again) is type(transform)
        assert again.get_config() == transform.get_config()
