"""APGD and APGD-T (Croce & Hein 2020): closed-form worst cases on linear models, the checkpoint
schedule and the DLR losses against their definitions, and the attack core's contracts
(per-example seeding, one trace for every radius, gradient-free attacks refused for training)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from core_helpers import linear_model, small_cnn

from robustkit import InputError
from robustkit.attacks import APGD, APGDT, PGD, Square
from robustkit.attacks.apgd import checkpoint_intervals
from robustkit.losses import dlr, dlr_targeted
from robustkit.models import Classifier
from robustkit.norms import Linf
from robustkit.seeding import example_keys, uniform

RNG = np.random.default_rng(11)


def two_class_linear() -> tuple[Classifier, np.ndarray, np.ndarray]:
    """A 2-class linear model on 2x2x3 inputs with wide bounds (no clipping)."""
    weights = RNG.normal(size=(12, 2)).astype(np.float32)
    x = RNG.uniform(-1, 1, size=(8, 2, 2, 3)).astype(np.float32)
    return Classifier(linear_model(weights, np.zeros(2), (2, 2, 3)), bounds=(-10, 10)), weights, x


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.2)])
def test_apgd_ce_reaches_the_closed_form_worst_case_of_a_linear_model(norm, eps) -> None:
    """On a linear 2-class model the loss is maximal at x + eps * d, d the unit direction of
    w_other - w_pred (sign for Linf): full-budget APGD must end there."""
    classifier, weights, x = two_class_linear()
    flat = x.reshape(len(x), -1)
    predicted = (flat @ weights).argmax(1)
    difference = weights[:, 1 - predicted].T - weights[:, predicted].T
    if norm == "linf":
        direction = np.sign(difference)
    else:
        direction = difference / np.linalg.norm(difference, axis=1, keepdims=True)
    result = APGD(norm, eps, steps=30, loss="ce", early_stop=False)(classifier, x)
    np.testing.assert_allclose(result.x_adv.reshape(len(x), -1), flat + eps * direction, atol=2e-4)


def test_apgd_dlr_reaches_the_worst_case_of_a_three_class_linear_model() -> None:
    """DLR with 3 classes: -(z_y - z_other_max) / (z_pi1 - z_pi3). Ascending it from a point
    far from the boundary pushes z_other - z_y up, so full-budget APGD with a tiny eps ends
    at x + eps * sign(w_best_other - w_y) (the gradient's sign is constant in the small ball)."""
    weights = RNG.normal(size=(12, 3)).astype(np.float32)
    classifier = Classifier(linear_model(weights, np.zeros(3), (2, 2, 3)), bounds=(-10, 10))
    x = RNG.uniform(-1, 1, size=(6, 2, 2, 3)).astype(np.float32)
    eps = 1e-3
    logits = x.reshape(6, -1) @ weights
    result = APGD("linf", eps, steps=20, loss="dlr", early_stop=False)(classifier, x)
    delta = (result.x_adv - x).reshape(6, -1)
    # the loss of the result is at least that of the DLR-gradient vertex and of the start
    loss_at = dlr(tf.constant(result.x_adv.reshape(6, -1) @ weights), logits.argmax(1)).numpy()
    loss_clean = dlr(tf.constant(logits), logits.argmax(1)).numpy()
    assert np.all(loss_at > loss_clean)
    assert np.all(np.abs(delta) <= eps * (1 + 1e-5))
    assert np.mean(np.isclose(np.abs(delta), eps, rtol=1e-3)) > 0.95  # at a vertex


def test_checkpoint_schedule_matches_the_reference_rounding() -> None:
    """p_1 = 0.22, interval shrinking by 0.03 down to 0.06 of the steps (reference ints)."""
    assert checkpoint_intervals(100) == (22, 3, 6)
    assert checkpoint_intervals(10) == (2, 1, 1)
    assert checkpoint_intervals(1) == (1, 1, 1)
    first, decrease, shortest = checkpoint_intervals(100)
    checkpoints, at, interval = [], 0, first
    while at + interval <= 100:
        at += interval
        checkpoints.append(at)
        interval = max(interval - decrease, shortest)
    assert checkpoints[:6] == [22, 41, 57, 70, 80, 87]


def test_dlr_losses_match_their_definitions_and_are_shift_and_scale_invariant() -> None:
    logits = RNG.normal(size=(9, 10)).astype(np.float32)
    y = RNG.integers(0, 10, 9)
    target = (y + 1 + RNG.integers(0, 9, 9)) % 10
    ordered = -np.sort(-logits, axis=1)
    own = logits[np.arange(9), y]
    others = np.where(np.eye(10)[y] > 0, -np.inf, logits).max(1)
    expected = -(own - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    np.testing.assert_allclose(dlr(tf.constant(logits), tf.constant(y)).numpy(), expected, 1e-5)
    expected_t = -(own - logits[np.arange(9), target]) / (
        ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
    )
    got_t = dlr_targeted(tf.constant(logits), tf.constant(y), tf.constant(target)).numpy()
    np.testing.assert_allclose(got_t, expected_t, rtol=1e-5)
    moved = dlr(tf.constant(3.0 * logits + 7.0), tf.constant(y)).numpy()
    np.testing.assert_allclose(moved, expected, rtol=1e-4)


def test_apgd_beats_fixed_step_pgd_and_apgdt_targets_the_runner_up() -> None:
    classifier = Classifier(small_cnn(seed=12, classes=5))
    x = RNG.random((60, 8, 8, 1), dtype=np.float32)
    y = classifier.predict_logits(x).argmax(1)
    eps = 0.04
    pgd = PGD("linf", eps, steps=20, rel_step_size=0.025, random_start=False)(classifier, x, y)
    apgd = APGD("linf", eps, steps=20)(classifier, x, y)
    assert apgd.success.sum() >= pgd.success.sum()
    targeted = APGDT("linf", eps, steps=20, targets=4)(classifier, x, y)
    assert np.all(targeted.adv_pred[targeted.success] != y[targeted.success])
    assert (
        targeted.success.sum()
        >= APGDT("linf", eps, steps=20, targets=1)(classifier, x, y).success.sum()
    )


@pytest.mark.parametrize(
    "attack",
    [
        PGD("linf", 0.05, steps=6, restarts=2, seed=3),
        APGD("l2", 0.4, steps=8, seed=3),
        APGD("linf", 0.05, steps=8, loss="dlr", seed=3),
        APGDT("linf", 0.05, steps=6, targets=2, seed=3),
        Square("linf", 0.05, queries=40, seed=3),
    ],
    ids=["pgd", "apgd-l2", "apgd-dlr", "apgdt", "square"],
)
def test_an_example_gets_the_same_bytes_whatever_batch_it_is_in(attack) -> None:
    """Per-example seeding: batch size, the other examples and early stopping of the others
    change nothing for an example (its random draws come from its own key)."""
    classifier = Classifier(small_cnn(seed=13))
    x = RNG.random((20, 8, 8, 1), dtype=np.float32)
    y = classifier.predict_logits(x).argmax(1)
    whole = attack(classifier, x, y, batch_size=20)
    for other in (
        attack(classifier, x, y, batch_size=3),
        attack(classifier, x[5:9], y[5:9], first_index=5),
    ):
        rows = slice(None) if len(other.x_adv) == 20 else slice(5, 9)
        if attack.norm.name == "linf":
            assert other.x_adv.tobytes() == whole.x_adv[rows].tobytes()
        else:
            # An L2 norm is a sum over the image whose order TensorFlow's CPU reduction picks
            # by batch shape: the same up to float32 round-off of that sum.
            np.testing.assert_allclose(other.x_adv, whole.x_adv[rows], atol=1e-6)
        np.testing.assert_array_equal(other.success, whole.success[rows])
        np.testing.assert_array_equal(other.steps, whole.steps[rows])


def test_keys_are_per_example_and_uniform_draws_look_uniform() -> None:
    keys = example_keys(tf.constant([1, 2]), tf.range(500))
    again = example_keys(tf.constant([1, 2]), tf.range(250, 260))
    np.testing.assert_array_equal(keys[250:260].numpy(), again.numpy())
    draws = uniform(keys, [64]).numpy()
    assert 0 < draws.min() and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.std() - 12**-0.5) < 0.01
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.1
    assert abs(np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1]) < 0.1


def test_one_trace_serves_every_radius() -> None:
    classifier = Classifier(small_cnn(seed=14))
    x = RNG.random((10, 8, 8, 1), dtype=np.float32)
    attack = APGD("linf", 0.1, steps=4)
    for eps in (0.01, 0.02, 0.05, 0.1, 0.2):
        attack(classifier, x, eps=eps)
    assert attack.compiled(classifier, None).experimental_get_tracing_count() == 1


def test_core_refuses_what_cannot_work() -> None:
    with pytest.raises(InputError, match="radius once"):
        PGD(Linf(8 / 255), eps=16 / 255)
    with pytest.raises(InputError, match="saliency objective"):
        PGD("linf", 0.1, loss="logit")
    classifier = Classifier(small_cnn())
    x = RNG.random((3, 8, 8, 1), dtype=np.float32)
    with pytest.raises(InputError, match="untargeted"):
        APGD("linf", 0.1, steps=2)(classifier, x, target="random")
    with pytest.raises(InputError, match="targets"):
        APGDT("linf", 0.1, targets=0)


def test_trainer_refuses_a_gradient_free_attack() -> None:
    from robustkit.training import AdversarialTrainer

    model = small_cnn()
    with pytest.raises(InputError, match="gradient-free"):
        AdversarialTrainer(model, keras.optimizers.Adam(), Square("linf", 0.1))
