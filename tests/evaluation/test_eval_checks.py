"""Each sanity check fires on a model (or attack) built to trip it and stays quiet on a healthy
model evaluated properly."""

import warnings

import keras
import pytest
from eval_helpers import (
    LeakyStep,
    dropout_outputs,
    healthy,
    healthy_report,
    periodic_data,
    periodic_outputs,
    quadrant_data,
    quantized_outputs,
    softmax_outputs,
    stop_gradient_outputs,
    trained_mlp,
    wrapped,
)

from robustkit.attacks import APGD, FGSM, PGD, Square
from robustkit.evaluation import CHECKS, SuiteAttack, evaluate
from robustkit.models import Classifier
from robustkit.norms import Linf

DATA = quadrant_data(32, seed=21)


def run(classifier, checks, suite=None, epsilons=(0.1,), data=DATA):
    suite = suite or [FGSM("linf", epsilons[0])]
    return evaluate(classifier, data, "linf", list(epsilons), suite=suite, checks=checks)


def test_every_check_is_quiet_on_a_healthy_model() -> None:
    report = healthy_report()
    assert [check.number for check in report.checks] == list(range(1, 10))
    assert {check.name: check.verdict for check in report.checks} == dict.fromkeys(CHECKS, "pass")
    assert report.robust_accuracy[0] > 0.9 and report.robust_accuracy[1] == 0.0
    label_leaking = report.check("label_leaking")
    assert label_leaking.details["misclassified"] == 2  # tested, not vacuous
    assert report.check("convergence").details["eps"] == 0.1
    for check in report.checks:
        if check.number in (5, 7):
            assert check.subsample is None  # main results only
        else:
            assert check.subsample and f"{check.subsample}" in check.explanation


def test_probability_outputs_fail_and_an_unwrapped_softmax_head_passes() -> None:
    with pytest.warns(UserWarning, match="probabilities"):
        unrecoverable = wrapped(softmax_outputs)
    declared_logits = wrapped(softmax_outputs, output="logits")
    head = Classifier(keras.Sequential([trained_mlp(), keras.layers.Softmax()]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verdicts = [run(c, [1]).check(1) for c in (unrecoverable, declared_logits, head)]
    assert [check.verdict for check in verdicts] == ["fail", "fail", "pass"]
    assert "cannot be recovered" in verdicts[0].explanation
    assert verdicts[1].details["attacked_values_are_probabilities"]
    assert verdicts[2].details["raw_outputs_are_probabilities"]
    assert "softmax" in verdicts[2].explanation


def test_quantizing_input_layer_zeroes_gradients() -> None:
    check = run(wrapped(quantized_outputs), [2]).check(2)
    assert check.verdict == "fail"
    assert check.details["zero_margin_gradient_share"] == 1.0


def test_dropout_at_inference_is_caught_as_nondeterminism() -> None:
    check = run(wrapped(dropout_outputs), [3]).check(3)
    assert check.verdict == "fail"
    assert check.details["relative_logit_change"] > 1e-2


def test_stop_gradient_model_fails_masking_large_eps_and_black_box_checks() -> None:
    suite = [PGD("linf", 0.3, steps=10, random_start=False), Square("linf", 0.3, queries=100)]
    report = run(wrapped(stop_gradient_outputs), [2, 6, 7], suite, (0.3,))
    assert [report.check(n).verdict for n in (2, 6, 7)] == ["fail", "fail", "fail"]
    large = report.check("large_eps").details
    assert large["eps"] == 0.5 and large["accuracy"] > large["largest_class_share"]
    assert report.check(7).details["per_eps"][0]["examples"] > 0.8 * len(DATA[1])


def test_weak_iterative_attack_loses_to_one_step_and_has_not_converged() -> None:
    weak = PGD("linf", 0.25, steps=4, rel_step_size=0.2, random_start=False)
    report = run(healthy(), [4, 8], [weak], (0.25,))
    single_step, convergence = report.check(4), report.check(8)
    assert single_step.verdict == "fail"
    row = single_step.details["per_eps"][0]
    assert row["fgsm_accuracy"] < row["iterative_accuracy"]
    assert convergence.verdict == "fail"
    details = convergence.details
    assert details["accuracy_with_doubled_budget"] < details["accuracy"]
    assert details["budget_factor"] == 2


def test_accuracy_rising_with_eps_is_flagged() -> None:
    """One step of size eps on a periodic model breaks it at eps 0.1 but not at 0.35."""
    report = run(
        wrapped(periodic_outputs), [4, 5], [FGSM("linf", 0.1)], (0.1, 0.35), periodic_data()
    )
    # Broken at 0.1 means broken at 0.35 (the same adversarial is in the larger ball): the
    # headline carries it over, and check 5 still sees the attack's own miss at 0.35.
    assert report.robust_accuracy == [0.0, 0.0]
    check = report.check(5)
    assert check.verdict == "fail" and check.details["rises"][0]["eps"] == [0.1, 0.35]
    single_step = report.check(4)  # FGSM's own accuracy rising is the same warning sign
    assert single_step.verdict == "warn"
    assert single_step.details["fgsm_accuracy_rises_with_eps"]
    assert "rises with eps" in single_step.explanation


def test_an_attack_that_returns_misclassified_examples_to_their_class_leaks_labels() -> None:
    x, y = periodic_data()
    x[8:] -= 0.13  # mean 0.32: class 1 under the model, labelled 0; one step back is class 0
    leaky = [SuiteAttack("leaky", LeakyStep)]
    check = run(wrapped(periodic_outputs), [9], leaky, (0.15,), (x, y)).check(9)
    assert check.verdict == "fail"
    assert check.details["per_eps"][0]["returned_to_true_class"] == {"leaky": 8}
    # robustkit's own attacks never do that on the same examples
    honest = run(wrapped(periodic_outputs), [9], [PGD(Linf(0.15), steps=5)], (0.15,), (x, y))
    assert honest.check(9).verdict == "pass"


def test_checks_can_be_chosen_by_name_or_number() -> None:
    report = run(healthy(), ["probabilities", 5])
    assert [c.verdict for c in report.checks] == ["pass"] + ["not run"] * 8
    assert report.check(5).explanation == "Needs at least two eps values."
    assert report.check(2).explanation == "Not selected for this run."


@pytest.mark.slow
def test_every_check_stays_quiet_on_a_healthy_model_at_10000_examples() -> None:
    """At 10,000 examples rare noise could trip share-based verdicts; an honest suite on a
    healthy model must still pass every check."""
    x, y = quadrant_data(10_000, seed=22)
    suite = [
        SuiteAttack("apgd-ce", APGD, {"steps": 20}),
        SuiteAttack("square", Square, {"queries": 200}),
    ]
    report = evaluate(healthy(), (x, y), "linf", [0.1, 0.3], suite=suite, batch_size=1000)
    assert {c.name: c.verdict for c in report.checks} == dict.fromkeys(CHECKS, "pass"), [
        c.explanation for c in report.checks if c.verdict != "pass"
    ]
    assert report.robust_accuracy[0] > 0.9 and report.robust_accuracy[1] == 0.0
