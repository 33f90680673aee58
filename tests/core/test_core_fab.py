"""FAB-T: exact box-constrained hyperplane projections, minimal distances of linear models,
the eps-ball success rule, bounds, determinism and per-example independence."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from core_helpers import linear_model, small_cnn, stacked_conv_model
from hypothesis import given, settings
from hypothesis import strategies as st

from robustkit import InputError
from robustkit.attacks import FABT
from robustkit.attacks.fab import project_onto_hyperplane_l2, project_onto_hyperplane_linf
from robustkit.models import Classifier

RNG = np.random.default_rng(11)
PROJECT = {"linf": project_onto_hyperplane_linf, "l2": project_onto_hyperplane_l2}


def norm_of(delta: np.ndarray, norm: str) -> np.ndarray:
    """Per-row Linf or L2 norm of delta [N, D]."""
    flat = delta.reshape(len(delta), -1)
    return np.abs(flat).max(1) if norm == "linf" else np.linalg.norm(flat, axis=1)


def dual_norm(w: np.ndarray, norm: str) -> np.ndarray:
    """Per-row L1 (dual of Linf) or L2 norm of w [N, D]."""
    return np.abs(w).sum(1) if norm == "linf" else np.linalg.norm(w, axis=1)


def linear_classifier(classes: int, bounds=(-10.0, 10.0), seed: int = 0):
    """A linear model on 2x2x3 images, 8 clean points, and each point's minimal Linf and L2
    distance to misclassification |f_y - f_k| / ||w_y - w_k||_dual (the box never binds)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(12, classes)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32)
    classifier = Classifier(linear_model(weights, bias, (2, 2, 3)), bounds=bounds)
    x = rng.uniform(-1, 1, size=(8, 2, 2, 3)).astype(np.float32)
    z = x.reshape(8, -1) @ weights + bias
    y = z.argmax(1)
    minimal = {}
    for norm in ("linf", "l2"):
        gaps = z[np.arange(8), y][:, None] - z  # [8, K] >= 0
        differences = weights.T[None, :, :] - weights.T[y][:, None, :]  # [8, K, 12]
        scale = (
            np.abs(differences).sum(-1) if norm == "linf" else np.linalg.norm(differences, axis=-1)
        )
        own = np.arange(classes)[None] == y[:, None]
        distance = np.where(own, np.inf, gaps / np.where(own, 1.0, scale))
        minimal[norm] = distance.min(1)
    return classifier, x, minimal


def fab_norm_sequence(eta: float, beta: float, alpha_max: float, steps: int) -> float:
    """Smallest adversarial FAB reaches on a linear 2-class model, as a multiple of the
    minimal distance: the iterate stays on the line through the projection d, x_0 + s d."""
    s, best = 0.0, np.inf
    for _ in range(steps):
        left = max(1.0 - s, 1e-8)  # ||projection of x_k||, in units of ||d||
        alpha = min(left / (left + 1.0), alpha_max)
        s = (s + eta * (1.0 - s)) * (1 - alpha) + eta * alpha
        if s > 1.0:
            best = min(best, s)
            s *= beta
    return best


# ---------------------------------------------------------------- projections


@settings(max_examples=40, deadline=None)
@given(
    dimension=st.integers(1, 4),
    norm=st.sampled_from(["linf", "l2"]),
    feasible=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_box_projection_is_on_the_hyperplane_in_the_box_and_no_feasible_point_is_closer(
    dimension, norm, feasible, seed
) -> None:
    rng = np.random.default_rng(seed)
    n = 6
    low = rng.uniform(-2, 0)
    high = low + rng.uniform(0.2, 3)
    t = rng.uniform(low, high, (n, dimension)).astype(np.float32)
    edge = rng.random((n, dimension))
    t[edge < 0.15] = low  # coordinates with no room to move one way
    t[edge > 0.85] = high
    w = rng.normal(size=(n, dimension)).astype(np.float32)
    w[rng.random((n, dimension)) < 0.2] = 0.0  # some coordinates the hyperplane ignores
    corner_high = np.where(w > 0, high, low)  # the box corner maximising w . z
    if feasible:
        b = np.sum(w * rng.uniform(low, high, (n, dimension)), 1).astype(np.float32)
    else:  # beyond the box: the reference goes to the corner nearest the hyperplane
        b = (np.sum(w * corner_high, 1) + rng.uniform(0.1, 1, n)).astype(np.float32)
    d = PROJECT[norm](t, w, b, low, high).numpy()
    q = t + d
    assert np.all(q >= low - 1e-5) and np.all(q <= high + 1e-5)
    np.testing.assert_array_equal(d[w == 0], 0.0)
    if not feasible:
        np.testing.assert_allclose(q[w != 0], corner_high[w != 0], atol=1e-5)
        return
    assert np.all(np.abs(np.sum(w * q, 1) - b) <= 1e-4 * (1 + np.abs(b)))
    # Random feasible points: box points with one coordinate solved onto the hyperplane.
    samples = rng.uniform(low, high, (n, 3000, dimension))
    distance = norm_of(d, norm)
    for row in range(n):
        for j in np.flatnonzero(np.abs(w[row]) > 0.05):
            z = samples[row].copy()
            rest = z @ w[row] - z[:, j] * w[row, j]
            z[:, j] = (b[row] - rest) / w[row, j]
            z = z[(z[:, j] >= low) & (z[:, j] <= high)]
            if len(z):
                assert norm_of(z - t[row], norm).min() >= distance[row] - 1e-5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_without_active_box_is_the_closed_form(norm) -> None:
    t = RNG.uniform(-1, 1, (5, 7)).astype(np.float32)
    w = RNG.normal(size=(5, 7)).astype(np.float32)
    b = RNG.normal(size=5).astype(np.float32)
    c = b - np.sum(w * t, 1)
    if norm == "linf":
        expected = np.sign(w) * (c / np.abs(w).sum(1))[:, None]
    else:
        expected = w * (c / np.square(w).sum(1))[:, None]
    d = PROJECT[norm](t, w, b, -100.0, 100.0).numpy()
    np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- linear models


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_minimal_distance_found_within_eps_and_missed_below_it(norm) -> None:
    classifier, x, minimal = linear_classifier(classes=4, seed=1)
    minimal = minimal[norm]
    # eta ~ 1: the first step lands on the boundary (FAB is exact on linear models).
    attack = FABT(norm, 1.0, steps=5, targets=3, eta=1.0002, early_stop=False)
    above = attack(classifier, x, eps=float(minimal.max() * 1.001))
    assert above.success.all()
    found = above.linf if norm == "linf" else above.l2
    assert np.all(found >= minimal * (1 - 1e-5)) and np.all(found <= minimal * (1 + 1e-3))
    below = attack(classifier, x, eps=float(minimal.min() * 0.999))
    assert not below.success.any()
    distance = below.linf if norm == "linf" else below.l2
    assert np.all(distance <= minimal.min() * 0.999 + 1e-6)  # non-adversarial points in the ball


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_default_overshoot_follows_the_fab_recursion_on_a_two_class_model(norm) -> None:
    classifier, x, minimal = linear_classifier(classes=2, seed=2)
    minimal = minimal[norm]
    steps = 8
    result = FABT(norm, float(minimal.max() * 2), steps=steps, early_stop=False)(classifier, x)
    found = result.linf if norm == "linf" else result.l2
    expected = fab_norm_sequence(1.05, 0.9, 0.1, steps)  # 1.0052: the default overshoot
    np.testing.assert_allclose(found / minimal, expected, rtol=2e-5)
    assert result.success.all() and np.all(result.steps == steps)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_active_box_gives_the_box_constrained_minimum(norm) -> None:
    """The cheapest coordinates to move sit 0.02-0.04 below the top of [0, 1]: the box binds."""
    v = np.array([2.0] * 6 + [-0.4] * 6, np.float32)  # normal of f_1 - f_0 = v . x - bias
    x = np.concatenate([RNG.uniform(0.96, 0.98, (6, 6)), RNG.uniform(0.85, 0.95, (6, 6))], 1)
    x = x.astype(np.float32)
    bias = float((x @ v).max() + 1.0)  # every point class 0 by a margin of 1 or more
    weights = np.stack([-v / 2, v / 2], axis=1)
    model = linear_model(weights, np.array([bias / 2, -bias / 2]), (2, 2, 3))
    classifier = Classifier(model)
    w = np.tile(v, (6, 1))
    projection = PROJECT[norm](x, w, np.full(6, bias, np.float32), 0.0, 1.0).numpy()
    box_minimal = norm_of(projection, norm)
    free_minimal = (bias - x @ v) / dual_norm(w, norm)
    assert np.all(box_minimal > free_minimal * 1.05)  # the box matters here
    attack = FABT(norm, float(box_minimal.max() * 1.001), steps=5, targets=1, eta=1.0002,
                  early_stop=False)  # fmt: skip
    result = attack(classifier, x.reshape(6, 2, 2, 3))
    found = result.linf if norm == "linf" else result.l2
    assert result.success.all()
    np.testing.assert_allclose(found, box_minimal, rtol=1e-3)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.15)])
def test_results_stay_in_ball_and_bounds_and_success_is_rechecked(norm, eps) -> None:
    classifier = Classifier(small_cnn(seed=3), bounds=(-0.5, 0.5))
    x = RNG.uniform(-0.5, 0.5, (24, 8, 8, 1)).astype(np.float32)
    result = FABT(norm, eps, steps=10, targets=2, restarts=2, seed=1)(classifier, x)
    distance = result.linf if norm == "linf" else result.l2
    assert np.all(distance <= eps + 1e-6)
    assert result.x_adv.min() >= -0.5 and result.x_adv.max() <= 0.5
    predictions = classifier.predict_logits(result.x_adv).argmax(1)
    np.testing.assert_array_equal(result.success, predictions != result.labels)
    assert 0 < result.success.sum() < len(x)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_restarts_escape_a_flat_start_and_same_seed_gives_same_bytes(norm) -> None:
    """logits = (0.5, relu(w . x)): at the clean points the gradient is zero, so the first
    run (from the clean point) cannot move; restarts from x + eps / 2 * t / ||t|| can."""
    model = keras.Sequential(
        [
            keras.Input((2, 2, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="relu"),
            keras.layers.Dense(2),
        ]
    )
    w = np.full(12, 12**-0.5, np.float32)  # unit normal
    x = RNG.uniform(-1, 1, (8, 12)).astype(np.float32)
    x = x - (x @ w + 0.05)[:, None] * w  # w . x = -0.05: just below the kink at 0
    model.layers[1].set_weights([w[:, None], np.zeros(1, np.float32)])
    model.layers[2].set_weights([np.array([[0.0, 1.0]], np.float32), np.array([0.5, 0.0])])
    classifier = Classifier(model, bounds=(-10, 10))
    x = x.reshape(8, 2, 2, 3)
    assert np.all(classifier.predict_logits(x).argmax(1) == 0)
    stuck = FABT(norm, 1.0, steps=5, restarts=1)(classifier, x)
    assert not stuck.success.any() and stuck.x_adv.tobytes() == x.tobytes()
    attack = FABT(norm, 1.0, steps=5, restarts=6, seed=1)
    runs = [
        attack(classifier, x),
        attack(classifier, x),
        FABT(norm, 1.0, steps=5, restarts=6, seed=2)(classifier, x),
    ]
    assert runs[0].x_adv.tobytes() == runs[1].x_adv.tobytes()
    assert runs[0].x_adv.tobytes() != runs[2].x_adv.tobytes()
    assert runs[0].success.sum() >= 4 and runs[2].success.sum() >= 4
    distance = runs[0].linf if norm == "linf" else runs[0].l2
    assert np.all(distance <= 1.0 + 1e-6)


def test_an_examples_result_does_not_depend_on_its_batch() -> None:
    classifier = Classifier(small_cnn(seed=4))
    x = RNG.random((6, 8, 8, 1), dtype=np.float32)
    attack = FABT("l2", 0.2, steps=6, targets=2, restarts=2, seed=5)
    first = attack(classifier, x, batch_size=6)
    assert 0 < first.success.sum() < 6  # some leave early, some run every restart
    # Alone, in smaller batches, or with other neighbours: the same bytes per example.
    alone = attack(classifier, x[2:3], first_index=2)
    assert alone.x_adv.tobytes() == first.x_adv[2:3].tobytes()
    split = attack(classifier, x, batch_size=4)
    assert split.x_adv.tobytes() == first.x_adv.tobytes()
    neighbours = RNG.random((6, 8, 8, 1), dtype=np.float32)
    neighbours[2] = x[2]
    mixed = attack(classifier, neighbours)
    assert mixed.x_adv[2].tobytes() == first.x_adv[2].tobytes()
    assert mixed.steps[2] == first.steps[2]


def test_budget_early_stopping_one_compiled_function_for_every_eps() -> None:
    classifier = Classifier(small_cnn(seed=6))
    x = np.random.default_rng(6).random((10, 8, 8, 1), dtype=np.float32)
    full = FABT("linf", 0.15, steps=4, targets=3, restarts=2, early_stop=False)(classifier, x)
    assert np.all(full.steps == 4 * 3 * 2)  # one gradient per step, target and restart
    assert 0 < full.success.sum() < len(x)
    attack = FABT("linf", 0.15, steps=4, targets=3, restarts=2)
    early = attack(classifier, x, batch_size=4)
    np.testing.assert_array_equal(early.success, full.success)
    assert np.all(early.steps[early.success] < 4 * 3 * 2)
    np.testing.assert_array_equal(early.steps[~early.success], 4 * 3 * 2)
    attack(classifier, x[:3], eps=0.2)
    assert attack.compiled(classifier, None).experimental_get_tracing_count() == 1


def test_examples_adversarial_at_the_clean_point_never_cost_an_empty_forward_pass() -> None:
    """Two stacked convolutions reject an empty batch; FAB-T must never run one."""
    classifier = Classifier(stacked_conv_model())
    x = RNG.random((5, 8, 8, 1), dtype=np.float32)
    wrong = (classifier.predict_logits(x).argmax(1) + 1) % 3
    result = FABT("linf", 0.1, steps=3, restarts=2)(classifier, x, wrong)
    assert result.success.all() and np.all(result.steps == 0)
    np.testing.assert_array_equal(result.x_adv, x)


def test_bad_options_and_targeted_calls_raise_input_error() -> None:
    classifier = Classifier(small_cnn())
    x = RNG.random((2, 8, 8, 1), dtype=np.float32)
    for options, word in [
        ({"steps": 0}, "steps"),
        ({"targets": 0}, "targets"),
        ({"alpha_max": 1.5}, "alpha_max"),
        ({"beta": 0.0}, "beta"),
        ({"eta": 0.0}, "eta"),
    ]:
        with pytest.raises(InputError, match=word):
            FABT("linf", 0.1, **options)
    with pytest.raises(InputError, match="picks its own target"):
        FABT("linf", 0.1, steps=1)(classifier, x, target=1)
    with pytest.raises(InputError, match="picks its own target"):
        FABT("l2", 0.1).run(classifier, tf.constant(x), tf.constant([0, 1]), [0, 0], targeted=True)
    assert FABT("l2", 0.5).config["targets"] == 9
