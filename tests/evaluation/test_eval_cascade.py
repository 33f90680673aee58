"""The cascade: worst case = per-example AND of the attacks, never above any attack; suites,
budgets and the evaluator's own bookkeeping."""

import numpy as np
import pytest
from eval_helpers import healthy, quadrant_data

from robustkit import InputError
from robustkit.attacks import FGSM, PGD, Square
from robustkit.evaluation import SuiteAttack, evaluate
from robustkit.evaluation.cascade import margins, top_other_classes
from robustkit.evaluation.suites import resolve_suite
from robustkit.norms import L2, Linf

EPS = 0.19  # the healthy model is partly robust here
SUITE = [
    SuiteAttack("pgd-ce", PGD, {"steps": 10, "rel_step_size": 0.25}),
    SuiteAttack(
        "pgd-margin",
        PGD,
        {"steps": 10, "rel_step_size": 0.25, "loss": "margin", "random_start": False},
    ),
    SuiteAttack("square", Square, {"queries": 50}),
]


def data() -> tuple[np.ndarray, np.ndarray]:
    """24 quadrant images, two of them mislabelled (so never attacked)."""
    x, y = quadrant_data(24, seed=11)
    y[[3, 17]] = (y[[3, 17]] + 1) % 4
    return x, y


@pytest.fixture(scope="module")
def both_modes():
    """The same suite in cascade and independent mode, one example per chunk (per-example
    seeds, so each attack sees each example exactly alike in both modes)."""
    x, y = data()
    options = dict(suite=SUITE, batch_size=1, checks=None, per_example=True, seed=5)
    cascade = evaluate(healthy(), (x, y), Linf(EPS), **options)
    independent = evaluate(healthy(), (x, y), Linf(EPS), cascade=False, **options)
    return x, y, cascade, independent


def test_cascade_worst_case_is_the_and_of_independent_attack_successes(both_modes) -> None:
    _, y, cascade, independent = both_modes
    ex_c, ex_i = cascade.examples, independent.examples
    correct = ex_i.clean_pred == y
    expected = correct & ~ex_i.broken[:, 0].any(axis=0)
    assert 0 < expected.sum() < correct.sum()  # a case where the AND matters
    np.testing.assert_array_equal(ex_c.robust[0], expected)
    np.testing.assert_array_equal(ex_i.robust[0], expected)
    assert cascade.robust_accuracy[0] == independent.robust_accuracy[0] == expected.mean()
    # each attack in the cascade saw exactly the examples still robust, and broke exactly
    # what it breaks when run alone on them
    still_robust = correct.copy()
    for a in range(len(SUITE)):
        np.testing.assert_array_equal(ex_c.attacked[a, 0], still_robust)
        np.testing.assert_array_equal(ex_c.broken[a, 0], ex_i.broken[a, 0] & still_robust)
        still_robust &= ~ex_i.broken[a, 0]
    first_breaker = np.where(ex_i.broken[:, 0].any(0), ex_i.broken[:, 0].argmax(0), -1)
    np.testing.assert_array_equal(ex_c.broken_by[0], np.where(correct, first_breaker, -2))
    # misclassified examples are never attacked and keep their clean prediction
    assert not ex_c.attacked[:, 0, ~correct].any()
    np.testing.assert_array_equal(ex_c.adversarial_pred[0, ~correct], ex_c.clean_pred[~correct])


def test_worst_case_is_never_above_any_attack(both_modes) -> None:
    _, _, cascade, independent = both_modes
    for report in (cascade, independent):
        accuracy = report.attack_accuracy()[:, 0]
        assert np.all(report.robust_accuracy[0] <= accuracy + 1e-12)
    # cascade rows only fall; its last row is the worst case
    cumulative = cascade.attack_accuracy()[:, 0]
    assert np.all(np.diff(cumulative) <= 0) and cumulative[-1] == cascade.robust_accuracy[0]


def test_kept_adversarials_are_the_strongest_and_inside_the_ball(both_modes) -> None:
    _, y, cascade, _ = both_modes
    ex = cascade.examples
    broken = ex.broken_by[0] >= 0
    assert np.all(ex.adversarial_margin[0, broken] > 0)  # misclassified
    assert np.all(ex.adversarial_pred[0, broken] != y[broken])
    assert np.all(ex.adversarial_margin[0, ex.robust[0]] <= 0)
    assert np.all(ex.linf[0] <= EPS * (1 + 1e-5))
    assert cascade.verification["outside_ball"] == 0
    assert cascade.verification["disagreements"] == 0
    assert cascade.verification["rechecked"] == int(ex.broken[:, 0].sum())


def test_cascade_spends_less_and_the_report_counts_it(both_modes) -> None:
    _, y, cascade, independent = both_modes
    correct = int((cascade.examples.clean_pred == y).sum())
    for report in (cascade, independent):
        spent = report.cost["gradient_evaluations"] + report.cost["forward_evaluations"]
        assert spent == report.examples.evaluations.sum()
        per_example = [10, 10, 50]
        assert report.cost["full_budget_gradient_evaluations"] == 20 * correct
        assert report.cost["full_budget_forward_evaluations"] == 50 * correct
        for outcome, budget in zip(report.outcomes, per_example, strict=True):
            assert (
                outcome.full_budget_gradient_evaluations + outcome.full_budget_forward_evaluations
                == budget * correct
            )
    assert cascade.cost["share_of_full_budget"] < independent.cost["share_of_full_budget"]
    assert cascade.outcome("square", EPS).forward_evaluations <= (
        independent.outcome("square", EPS).forward_evaluations
    )


@pytest.mark.parametrize("threat", [Linf(EPS), L2(1.2)])
def test_evaluator_breaks_exactly_what_the_attack_itself_breaks(threat) -> None:
    """A deterministic PGD run through the evaluator agrees with PGD's own __call__."""
    x, y = data()
    attack = PGD(threat, steps=10, rel_step_size=0.25, loss="margin", random_start=False)
    report = evaluate(healthy(), (x, y), threat, suite=[attack], checks=None, per_example=True)
    correct = report.examples.clean_pred == y
    direct = attack(healthy(), x[correct], y[correct])
    assert 0 < direct.success.sum() < correct.sum()
    np.testing.assert_array_equal(report.examples.broken[0, 0, correct], direct.success)
    np.testing.assert_array_equal(report.examples.evaluations[0, correct], direct.steps)
    assert report.attack_names == ["pgd-margin"] and report.norm == threat.name


def test_top_other_classes_and_margins_match_the_definitions() -> None:
    logits = np.array([[3.0, 1.0, 2.0, 0.0], [0.0, 5.0, 4.0, 6.0]], np.float32)
    labels = np.array([0, 3])
    np.testing.assert_array_equal(top_other_classes(logits, labels, 2), [[2, 1], [1, 2]])
    np.testing.assert_array_equal(top_other_classes(logits, labels, 9).shape, (3, 2))
    np.testing.assert_allclose(margins(logits, labels), [2.0 - 3.0, 5.0 - 6.0])


def test_suite_entries_rebuild_for_each_eps_with_relative_steps() -> None:
    pgd = SuiteAttack.from_attack(PGD("linf", 0.3, steps=10, restarts=2, loss="margin"))
    rebuilt = pgd.build(Linf(0.15))
    assert rebuilt.config["step_size"] == pytest.approx(0.15 * 2.5 / 10)
    assert (rebuilt.steps, rebuilt.restarts, rebuilt.loss) == (10, 2, "margin")
    doubled = pgd.build(Linf(0.15), budget_factor=2)
    assert (doubled.steps, doubled.restarts) == (20, 4)
    assert doubled.step_size == rebuilt.step_size
    fgsm = SuiteAttack.from_attack(FGSM("l2", 1.0, random_start=True)).build(L2(2.0))
    assert fgsm.step_size == pytest.approx(2.5) and fgsm.random_start
    square = SuiteAttack.from_attack(Square("linf", 0.1, queries=30, p_init=0.3))
    assert square.gradient_free and square.build(Linf(0.2), 2).queries == 60
    assert square.build(Linf(0.2)).budget(10) == 30
    assert PGD("linf", 0.1, steps=7, restarts=3, quantize=255).budget(10) == 31


def test_gradient_free_attacks_run_last_and_names_are_unique() -> None:
    name, suite = resolve_suite([Square("linf", 0.1), PGD("linf", 0.1)])
    assert name == "custom" and [a.name for a in suite] == ["pgd-ce", "square"]
    # AutoAttack's standard version, with its budgets
    standard = resolve_suite("standard")[1]
    assert [a.name for a in standard] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [dict(a.options) for a in standard] == [
        {"steps": 100, "loss": "ce"},
        {"steps": 100, "targets": 9},
        {"steps": 100, "targets": 9},
        {"queries": 5000, "p_init": 0.8, "rescale_schedule": False},
    ]
    assert [a.name for a in resolve_suite("quick")[1]] == ["apgd-ce", "apgd-t"]
    assert resolve_suite("quick")[1][1].options["targets"] == 3
    with pytest.raises(InputError, match="unique"):
        resolve_suite([PGD("linf", 0.1), PGD("linf", 0.2)])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"data": "nope"}, "data must be"),
        ({"data": {"x": np.zeros((2, 8, 8, 1), np.float32)}}, "keys"),
        ({"data": (np.zeros((2, 8, 8, 1), np.float32), None)}, "labels"),
        ({"data": (np.zeros((2, 8, 8, 1), np.float32), [0, 9])}, "classes"),
        ({"data": (np.zeros((2, 8, 8), np.float32), [0, 1])}, "shape"),
        ({"epsilons": []}, "at least one eps"),
        ({"epsilons": [0.1, 0.1]}, "distinct"),
        ({"epsilons": [-0.1]}, "eps"),
        ({"threat": "l1"}, "threat"),
        ({"suite": "huge"}, "suite"),
        ({"checks": ["nope"]}, "check"),
        ({"check_samples": 0}, "check_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_input_fails_early_with_a_clear_message(arguments, message) -> None:
    options = {
        "data": (np.zeros((2, 8, 8, 1), np.float32), [0, 1]),
        "threat": "linf",
        "epsilons": [0.1],
        **arguments,
    }
    with pytest.raises(InputError, match=message):
        evaluate(healthy(), options.pop("data"), options.pop("threat"), **options)
