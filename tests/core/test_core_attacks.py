"""FGSM and PGD: closed-form worst cases, invariants, determinism, early stopping, 8-bit grid."""

import numpy as np
import pytest
import tensorflow as tf
from core_helpers import linear_model, small_cnn, stacked_conv_model
from hypothesis import given, settings
from hypothesis import strategies as st

from robustkit import InputError
from robustkit.attacks import FGSM, PGD, AttackResult, is_robust
from robustkit.models import Classifier

RNG = np.random.default_rng(2)


def two_class_linear() -> tuple[Classifier, np.ndarray, np.ndarray]:
    """A 2-class linear model on 2x2x3 inputs with wide bounds (no clipping)."""
    weights = RNG.normal(size=(12, 2)).astype(np.float32)
    x = RNG.uniform(-1, 1, size=(8, 2, 2, 3)).astype(np.float32)
    return Classifier(linear_model(weights, np.zeros(2), (2, 2, 3)), bounds=(-10, 10)), weights, x


def worst_case_direction(weights: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    """Unit direction [N, 12] raising the other class's logit fastest: w_other - w_pred."""
    predicted = (x.reshape(len(x), -1) @ weights).argmax(1)
    difference = weights[:, 1 - predicted].T - weights[:, predicted].T
    if norm == "linf":
        return np.sign(difference)
    return difference / np.linalg.norm(difference, axis=1, keepdims=True)


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.2)])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_fgsm_and_one_step_pgd_equal_the_closed_form_worst_case(norm, eps, loss) -> None:
    classifier, weights, x = two_class_linear()
    expected = x.reshape(len(x), -1) + eps * worst_case_direction(weights, x, norm)
    fgsm = FGSM(norm, eps, loss=loss)(classifier, x)
    pgd = PGD(norm, eps, steps=1, step_size=eps, random_start=False, loss=loss)(classifier, x)
    for result in (fgsm, pgd):
        np.testing.assert_allclose(result.x_adv.reshape(len(x), -1), expected, atol=1e-5)
        distance = result.linf if norm == "linf" else result.l2
        np.testing.assert_allclose(distance, eps, rtol=1e-5)
        assert result.gradient_steps == len(x)


@settings(max_examples=12, deadline=None)
@given(
    height=st.integers(1, 4),
    channels=st.integers(1, 3),
    n=st.integers(1, 5),
    eps=st.floats(0.0, 0.6),
    norm=st.sampled_from(["linf", "l2"]),
    random_start=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_result_stays_in_ball_and_bounds(height, channels, n, eps, norm, random_start, seed):
    rng = np.random.default_rng(seed)
    shape = (height, height, channels)
    dimension = int(np.prod(shape))
    model = linear_model(rng.normal(size=(dimension, 3)) * 5, rng.normal(size=3), shape)
    classifier = Classifier(model)
    x = rng.random((n, *shape), dtype=np.float32)
    result = PGD(norm, eps, steps=3, random_start=random_start, seed=seed)(classifier, x)
    distance = result.linf if norm == "linf" else result.l2
    assert np.all(distance <= eps + 1e-6)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0


def test_restarts_are_never_worse_than_one_run() -> None:
    classifier = Classifier(small_cnn(seed=4))
    x = RNG.random((64, 8, 8, 1), dtype=np.float32)
    # A weak budget (one tiny step from a random start) leaves room for restarts to help.
    one = PGD("linf", 0.2, steps=1, step_size=0.001, restarts=1, seed=9)(classifier, x)
    many = PGD("linf", 0.2, steps=1, step_size=0.001, restarts=4, seed=9)(classifier, x)
    assert np.all(many.success[one.success])
    assert many.success.sum() > one.success.sum()
    assert many.robust_accuracy <= one.robust_accuracy


@pytest.mark.parametrize("target", ["least-likely", "random", "given"])
def test_targeted_attack_reaches_the_target(target) -> None:
    weights = RNG.normal(size=(12, 4)).astype(np.float32)
    classifier = Classifier(linear_model(weights, np.zeros(4), (2, 2, 3)))
    x = RNG.random((10, 2, 2, 3), dtype=np.float32)
    wanted = np.arange(10) % 4 if target == "given" else target
    result = PGD("linf", 1.0, steps=20, step_size=0.1)(classifier, x, target=wanted)
    assert np.all(result.success)
    np.testing.assert_array_equal(result.adv_pred, result.target)
    assert np.all(result.target != result.labels) or target == "given"
    if target == "least-likely":
        z = x.reshape(10, -1) @ weights
        np.testing.assert_array_equal(result.target, z.argmin(1))


def test_same_seed_same_bytes_different_seed_differs() -> None:
    classifier = Classifier(small_cnn(seed=5))
    x = RNG.random((20, 8, 8, 1), dtype=np.float32)
    runs = [
        PGD("l2", 0.5, steps=3, restarts=2, seed=s, early_stop=False)(classifier, x, batch_size=7)
        for s in (1, 1, 2)
    ]
    assert runs[0].x_adv.tobytes() == runs[1].x_adv.tobytes()
    assert runs[0].x_adv.tobytes() != runs[2].x_adv.tobytes()


def test_early_stopping_same_success_fewer_steps_no_retracing() -> None:
    classifier = Classifier(small_cnn(seed=6))
    x = RNG.random((50, 8, 8, 1), dtype=np.float32)
    full_attack = PGD("linf", 0.05, steps=10, early_stop=False, seed=3)
    full = full_attack(classifier, x, batch_size=16)
    early_attack = PGD("linf", 0.05, steps=10, early_stop=True, seed=3)
    early = early_attack(classifier, x, batch_size=16)
    np.testing.assert_array_equal(full.success, early.success)
    assert full.gradient_steps == 10 * 50
    assert early.gradient_steps < full.gradient_steps
    assert np.all(early.steps[~early.success] == 10) and np.all(early.steps[early.success] <= 10)
    early_attack(classifier, x[:5], batch_size=16)  # another uneven size
    function = early_attack.compiled(classifier, None)
    assert function.experimental_get_tracing_count() == 1


def test_labels_default_to_model_predictions() -> None:
    classifier = Classifier(small_cnn(seed=7))
    x = RNG.random((12, 8, 8, 1), dtype=np.float32)
    result = PGD("linf", 0.0, steps=2)(classifier, x)
    assert result.labels_from_model
    np.testing.assert_array_equal(result.labels, classifier.predict_logits(x).argmax(1))
    assert not result.success.any() and result.clean_accuracy == 1.0


@pytest.mark.parametrize("norm, eps", [("linf", 8 / 255), ("l2", 0.3)])
def test_quantized_result_is_on_grid_inside_ball_and_rechecked(norm, eps) -> None:
    classifier = Classifier(small_cnn(seed=8))
    x = np.round(RNG.random((40, 8, 8, 1)) * 255).astype(np.float32) / 255
    result = PGD(norm, eps, steps=10, quantize=255, seed=1)(classifier, x)
    pixels = result.x_adv * 255
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    saved = np.round(pixels).astype(np.uint8).astype(np.float32) / 255  # as a PNG round trip
    distance = result.linf if norm == "linf" else result.l2
    assert np.all(distance <= eps + 1e-6)
    predictions = classifier.predict_logits(saved).argmax(1)
    np.testing.assert_array_equal(predictions, result.adv_pred)
    np.testing.assert_array_equal(result.success, predictions != result.labels)
    assert result.success_unquantized is not None


def test_bad_attack_input_raises_input_error() -> None:
    classifier = Classifier(small_cnn())
    x = RNG.random((3, 8, 8, 1), dtype=np.float32)
    with pytest.raises(InputError, match="eps"):
        PGD("linf", -0.1)
    with pytest.raises(InputError, match="Unknown norm"):
        PGD("l0", 0.1)
    with pytest.raises(InputError, match="3 class indices"):
        PGD("linf", 0.1)(classifier, x, y=[0, 1])
    with pytest.raises(InputError, match="shape"):
        PGD("linf", 0.1)(classifier, x[..., 0])
    with pytest.raises(InputError, match="dtype"):
        PGD("linf", 0.1)(classifier, (x * 255).astype(np.uint8))
    with pytest.raises(InputError, match="outside"):
        PGD("linf", 0.1)(classifier, x + 1)
    with pytest.raises(InputError, match="steps"):
        PGD("linf", 0.1, steps=0)
    with pytest.raises(InputError, match="Unknown loss"):
        PGD("linf", 0.1, loss="hinge")
    with pytest.raises(InputError, match="target"):
        PGD("linf", 0.1)(classifier, x, target="most-likely")


def test_attack_runs_inside_a_users_tf_function() -> None:
    classifier = Classifier(small_cnn(seed=9))
    attack = PGD("linf", 0.1, steps=3, early_stop=False)
    x = tf.constant(RNG.random((4, 8, 8, 1), dtype=np.float32))
    labels = tf.constant([0, 1, 2, 3])
    run = tf.function(lambda x, y, s: attack.run(classifier, x, y, s).x_adv)
    seed = tf.constant([1, 2])
    eager = attack.run(classifier, x, labels, seed).x_adv
    np.testing.assert_allclose(run(x, labels, seed).numpy(), eager.numpy(), atol=1e-6)


def test_batch_where_every_example_breaks_early_skips_empty_forward_passes() -> None:
    """Two stacked convolutions reject an empty batch; early stopping must never run one."""
    classifier = Classifier(stacked_conv_model())
    x = RNG.random((6, 8, 8, 1), dtype=np.float32)
    wrong_labels = (classifier.predict_logits(x).argmax(1) + 1) % 3  # all adversarial at once
    result = PGD("linf", 0.1, steps=5, restarts=2, random_start=False)(classifier, x, wrong_labels)
    # The clean point is judged first (a forward pass, no gradient step): nothing is spent.
    assert result.success.all() and np.all(result.steps == 0)
    np.testing.assert_array_equal(result.x_adv, x)


def test_streamed_batches_with_first_index_match_one_call() -> None:
    classifier = Classifier(small_cnn(seed=10))
    x = RNG.random((9, 8, 8, 1), dtype=np.float32)
    attack = PGD("linf", 0.1, steps=2, seed=4, early_stop=False)
    whole = attack(classifier, x, batch_size=3)
    streamed = [attack(classifier, x[i : i + 3], batch_size=3, first_index=i) for i in (0, 3, 6)]
    joined = np.concatenate([part.x_adv for part in streamed])
    assert joined.tobytes() == whole.x_adv.tobytes()
    assert streamed[0].x_adv.tobytes() != attack(classifier, x[3:6], batch_size=3).x_adv.tobytes()


def test_robust_accuracy_counts_clean_errors_as_not_robust() -> None:
    """One rule (is_robust): an example misclassified clean is not robust even when the
    attacked image happens to be classified correctly (a targeted attack can do that)."""
    labels = np.array([0, 1, 2, 3])
    clean_pred = np.array([0, 1, 0, 3])  # example 2 is wrong before any attack
    adv_pred = np.array([0, 2, 2, 1])  # example 2 is right after it, 1 and 3 broken
    result = AttackResult(
        x_adv=np.zeros((4, 1, 1, 1), np.float32),
        success=adv_pred != labels,
        labels=labels,
        target=None,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        clean_confidence=np.ones(4),
        adv_confidence=np.ones(4),
        linf=np.zeros(4),
        l2=np.zeros(4),
        steps=np.zeros(4, np.int64),
    )
    assert result.robust_accuracy == 0.25
    np.testing.assert_array_equal(
        is_robust(clean_pred == labels, adv_pred != labels), [True, False, False, False]
    )
    in_graph = is_robust(tf.constant([True, True, False]), tf.constant([False, True, False]))
    np.testing.assert_array_equal(in_graph.numpy(), [True, False, False])
