"""Square: stays in the ball, same seed same bytes, counts queries, needs no gradients."""

import numpy as np
import pytest
import tensorflow as tf
from eval_helpers import SHAPE, healthy, quadrant_data, stop_gradient_outputs, wrapped

from robustkit import InputError
from robustkit.attacks import PGD, Square
from robustkit.attacks.square import window_fraction
from robustkit.models import Classifier


@pytest.mark.parametrize("norm, eps", [("linf", 0.15), ("l2", 1.0)])
def test_square_stays_in_ball_and_bounds_and_repeats_bytes(norm, eps) -> None:
    x, y = quadrant_data(24, seed=3)
    attack = Square(norm, eps, queries=60, seed=7)
    first = attack(healthy(), x, y)
    again = attack(healthy(), x, y)
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    distance = first.linf if norm == "linf" else first.l2
    assert np.all(distance <= eps * (1 + 1e-5))
    assert first.x_adv.min() >= 0.0 and first.x_adv.max() <= 1.0
    if norm == "linf":  # every changed pixel sits on a face of the ball or on a bound
        delta = np.abs(first.x_adv - x)
        on_face = np.isclose(delta, eps, atol=1e-6) | np.isin(first.x_adv, (0.0, 1.0))
        assert np.all(on_face | (delta == 0))
    # queries: at most the budget, fewer for examples broken early, one each at least
    assert np.all((first.steps >= 1) & (first.steps <= 60))
    assert np.all(first.steps[~first.success] == 60)
    attack.seed = 8  # read at call time: another seed, no new trace
    assert not np.array_equal(first.x_adv, attack(healthy(), x, y).x_adv)


def test_square_breaks_a_model_whose_gradients_are_cut() -> None:
    x, y = quadrant_data(32, seed=4)
    masked = wrapped(stop_gradient_outputs)
    pgd = PGD("linf", 0.3, steps=20, random_start=False)(masked, x, y)
    square = Square("linf", 0.3, queries=300)(masked, x, y)
    assert pgd.success.sum() == 0  # zero gradients: PGD never moves
    assert square.success.mean() > 0.9


def test_targeted_square_reaches_the_target_on_a_linear_model() -> None:
    weights = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    model = tf.keras.Sequential(
        [tf.keras.Input(SHAPE), tf.keras.layers.Flatten(), tf.keras.layers.Dense(4)]
    )
    model.layers[-1].set_weights([weights, np.zeros(4, np.float32)])
    x = np.full((6, *SHAPE), 0.5, np.float32)
    target = np.array([0, 1, 2, 3, 0, 1])
    result = Square("linf", 0.5, queries=200)(Classifier(model), x, target=target)
    assert np.all(result.success)
    np.testing.assert_array_equal(result.adv_pred, target)


def test_window_schedule_matches_the_paper_and_the_graph() -> None:
    # the area halves after 0.1%, 0.5%, 2%, 5%, 10%, 20%, 40%, 60% and 80% of the budget
    assert window_fraction(0, 1000, 0.8) == 0.8
    assert window_fraction(1, 1000, 0.8) == 0.8
    assert window_fraction(2, 1000, 0.8) == pytest.approx(0.4)
    assert window_fraction(6, 1000, 0.8) == pytest.approx(0.2)
    assert window_fraction(999, 1000, 0.8) == pytest.approx(0.8 / 512)
    attack = Square("linf", 0.1, queries=1000, p_init=0.8)
    sides = []
    for query in (0, 2, 6, 21, 51, 101, 201, 401, 601, 801, 999):
        reference = round(np.sqrt(window_fraction(query, 1000, 0.8) * 28 * 28))
        sides.append(int(attack._side(tf.constant(query), 28, 28).numpy()))
        assert sides[-1] == min(max(reference, 1), 27)
    assert sides == sorted(sides, reverse=True) and sides[0] == 25 and sides[-1] == 1


def test_l2_proposal_keeps_the_norm_at_eps() -> None:
    attack = Square("l2", 2.0, queries=10)
    rng = np.random.default_rng(1)
    delta = rng.normal(size=(5, 8, 8, 3)).astype(np.float32)
    delta *= 1.3 / np.linalg.norm(delta.reshape(5, -1), axis=1)[:, None, None, None]
    for query in range(4):
        seed = tf.constant([3, query], tf.int32)
        delta = attack._propose_l2(tf.constant(delta), tf.constant(3), seed).numpy()
        np.testing.assert_allclose(np.linalg.norm(delta.reshape(5, -1), axis=1), 2.0, rtol=1e-5)


@pytest.mark.parametrize(
    "options", [{"queries": 0}, {"p_init": 0.0}, {"p_init": 1.5}, {"restarts": 0}]
)
def test_square_rejects_bad_options(options) -> None:
    with pytest.raises(InputError):
        Square("linf", 0.1, **options)


def test_square_config_lists_every_hyperparameter() -> None:
    config = Square("l2", 0.5, queries=30, p_init=0.3, restarts=2, seed=4).config
    assert config == {
        "attack": "Square",
        "norm": "l2",
        "eps": 0.5,
        "queries": 30,
        "p_init": 0.3,
        "restarts": 2,
        "loss": "margin",
        "early_stop": True,
        "seed": 4,
    }
