"""Honesty of the headline number: the same adversarials whatever the entry point, carry-over
across radii, adversarials found by checks count, one trace for an eps sweep, and ball
tolerances at the bounds' own scale."""

from dataclasses import replace

import keras
import numpy as np
import pytest
from eval_helpers import healthy, quadrant_data, trained_mlp

from robustkit.attacks import APGD, FGSM, PGD
from robustkit.evaluation import SuiteAttack, evaluate
from robustkit.evaluation.cascade import within_ball
from robustkit.evaluation.suites import standard_suite
from robustkit.models import Classifier
from robustkit.norms import Linf


def test_evaluator_finds_the_bytes_the_attack_finds_with_the_same_seed() -> None:
    """Entry point, chunking and cascade composition change nothing: per-example keys."""
    x, y = quadrant_data(40, seed=4)
    attack = APGD("linf", 0.2, steps=12, seed=7)
    for batch_size in (5, 256):
        report = evaluate(
            healthy(), (x, y), Linf(0.2), suite=[attack], seed=7, batch_size=batch_size,
            checks=None, per_example=True, return_images=True,
        )  # fmt: skip
        direct = attack(healthy(), x, y)
        broken = report.examples.broken[0, 0]
        assert 0 < broken.sum() < len(y)
        np.testing.assert_array_equal(broken, direct.success)
        assert report.adversarial_images[0][broken].tobytes() == direct.x_adv[broken].tobytes()


def test_an_example_broken_at_a_smaller_eps_stays_broken_at_a_larger_one() -> None:
    """A weak attack that fails at the larger radius must not make the example robust there."""
    x, y = quadrant_data(32, seed=5)
    weak = FGSM("linf", 0.1)  # one step: at larger eps it can overshoot into the true class
    report = evaluate(
        healthy(), (x, y), "linf", [0.1, 0.15, 0.3], suite=[weak], checks=None, per_example=True
    )
    robust = report.examples.robust
    assert np.all(robust[1:] <= robust[:-1])
    assert list(report.robust_accuracy) == sorted(report.robust_accuracy, reverse=True)


def test_adversarials_found_by_the_checks_lower_the_headline() -> None:
    """A 4-step PGD with a tiny step loses to one FGSM step and to the doubled budget: their
    verified adversarials count against robust accuracy."""
    x, y = quadrant_data(48, seed=6)
    weak = PGD("linf", 0.25, steps=4, rel_step_size=0.05, random_start=False)
    report = evaluate(healthy(), (x, y), Linf(0.25), suite=[weak], checks=[4, 8], seed=1)
    fgsm_accuracy = report.check(4).details["per_eps"][0]["fgsm_accuracy"]
    assert report.robust_accuracy[0] <= fgsm_accuracy < report.robust_accuracy_before_checks[0]
    assert report.verification["broken_by_checks"] > 0
    assert report.check(8).details["adaptive_attacks"] == ["apgd-ce", "apgd-dlr"]


def test_two_whole_suites_log_no_retracing_warning(caplog) -> None:
    """Each attack's function traces once per classifier. TensorFlow counts traces per Python
    code object and warns "triggered tf.function retracing" once five of the recent calls
    traced, so the suite's attacks, all built by one driver, must not count as one function:
    two evaluations of two classifiers (eps 0.02: every attack runs) trace 8 functions, each
    exactly once over two batches."""
    x, y = quadrant_data(16, seed=7)
    built = []

    def recorded(factory):
        def build(norm, **options):
            built.append(factory(norm, **options))
            return built[-1]

        return build

    suite = [replace(entry, factory=recorded(entry.factory)) for entry in standard_suite()]
    with caplog.at_level("WARNING", logger="tensorflow"):
        for _ in range(2):
            classifier = healthy()
            report = evaluate(
                classifier, (x, y), Linf(0.02), suite=suite, batch_size=8, checks=None
            )
            assert [o.robust_accuracy for o in report.outcomes] == [1.0] * 4
            counts = [a.compiled(classifier, None).experimental_get_tracing_count() for a in built]
            assert counts == [1, 1, 1, 1]
            built.clear()
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_an_eps_sweep_traces_each_attack_once() -> None:
    built = []

    def factory(norm, **options):
        built.append(APGD(norm, **options))
        return built[-1]

    x, y = quadrant_data(16, seed=7)
    classifier = healthy()
    suite = [SuiteAttack("apgd", factory, {"steps": 5})]
    report = evaluate(
        classifier, (x, y), "linf", [0.02, 0.05, 0.1, 0.2, 0.3], suite=suite, checks=None
    )
    assert len(report.robust_accuracy) == 5 and len(built) == 1
    assert built[0].compiled(classifier, None).experimental_get_tracing_count() == 1


@pytest.mark.parametrize("bounds", [(0.0, 255.0), (-1.0, 1.0)])
def test_valid_points_near_the_upper_bound_count_as_inside_the_ball(bounds) -> None:
    """For bounds (0, 255), float32 rounding near 255 moves coordinates by 1.5e-5; an absolute
    1e-6 tolerance rejected valid PGD points. The evaluator must agree with the attack."""
    low, high = bounds
    scale = high - low
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / scale, -low / scale), trained_mlp()]
    )
    classifier = Classifier(model, bounds=bounds)
    x01, y = quadrant_data(40, seed=8)
    x = (low + scale * x01).astype(np.float32)
    eps = 0.3 * scale
    attack = PGD("linf", eps, steps=10, rel_step_size=0.1, random_start=False)
    direct = attack(classifier, x, y)
    assert np.all(within_ball("linf", eps, direct.x_adv, x, bounds))
    report = evaluate(classifier, (x, y), Linf(eps), suite=[attack], checks=None)
    assert report.verification["outside_ball"] == 0
    robust = (direct.clean_pred == y) & ~direct.success
    assert report.robust_accuracy[0] == pytest.approx(robust.mean())
    # a point one step of 1e-3 of the scale outside is rejected
    outside = np.clip(x + np.float32(eps + 1e-3 * scale), low, high)
    touches = np.abs(outside - x).reshape(len(x), -1).max(1) > eps
    assert not within_ball("linf", eps, outside, x, bounds)[touches].any()
