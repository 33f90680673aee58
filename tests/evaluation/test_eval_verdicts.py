"""The verdict rules on scripted measurements: exact verdicts at and around every threshold,
the sentences, and the report's details (internal fields left out, check 4's row verdicts)."""

import pytest

from robustkit.evaluation.checks.measurements import (
    AccuracyRise,
    ConvergenceMeasurements,
    DeterminismMeasurements,
    GradientFreeAtEps,
    GradientFreeMeasurements,
    GradientMeasurements,
    LabelLeakingAtEps,
    LabelLeakingMeasurements,
    LargeEpsMeasurements,
    MonotonicityMeasurements,
    ProbabilityMeasurements,
    SingleStepAtEps,
    SingleStepMeasurements,
    Skipped,
    SkipReason,
)
from robustkit.evaluation.checks.verdicts import (
    LOGIT_NOISE_FAIL,
    LOGIT_NOISE_WARN,
    SMALL_SHARE,
    ZERO_GRADIENT_FAIL_SHARE,
    judge,
    share_verdict,
    single_step_at_eps,
    worst,
)


def test_the_thresholds_are_the_documented_ones() -> None:
    assert (ZERO_GRADIENT_FAIL_SHARE, LOGIT_NOISE_WARN, LOGIT_NOISE_FAIL, SMALL_SHARE) == (
        0.01,
        1e-5,
        1e-3,
        0.01,
    )


@pytest.mark.parametrize(
    "count, total, verdict",
    [
        (0, 1000, "pass"),
        (1, 1000, "warn"),
        (10, 1000, "warn"),  # exactly SMALL_SHARE
        (11, 1000, "fail"),
        (1, 50, "warn"),  # below 100 examples one finding is only a warning
        (2, 50, "fail"),
        (1, 100, "warn"),
        (2, 100, "fail"),
    ],
)
def test_share_verdict_fails_above_one_percent_and_more_than_one(count, total, verdict) -> None:
    assert share_verdict(count, total) == verdict


def test_worst_orders_not_run_pass_warn_fail() -> None:
    assert worst([]) == "not run"
    assert worst(["pass", "not run"]) == "pass"
    assert worst(["pass", "warn", "pass"]) == "warn"
    assert worst(["warn", "fail", "pass"]) == "fail"


def probabilities(**changes):
    values = {
        "subsample": 32,
        "logits_source": "model output",
        "raw_outputs_are_probabilities": False,
        "attacked_values_are_probabilities": False,
        "saturated_share": 0.25,
        "logits_unrecoverable": False,
    }
    return ProbabilityMeasurements(**{**values, **changes})


def test_probabilities_rules_and_details() -> None:
    logits = judge(1, "probabilities", probabilities())
    assert logits.verdict == "pass" and logits.subsample == 32
    assert logits.explanation == (
        "The model outputs logits (model output); rows do not sum to 1. "
        "Outputs read on 32 subsample examples."
    )
    assert logits.details == {
        "logits_source": "model output",
        "raw_outputs_are_probabilities": False,
        "attacked_values_are_probabilities": False,
        "saturated_share": 0.25,
    }  # logits_unrecoverable is internal
    head = judge(1, "probabilities", probabilities(raw_outputs_are_probabilities=True))
    assert head.verdict == "pass" and head.explanation.startswith("The model ends in softmax")
    declared = judge(1, "probabilities", probabilities(attacked_values_are_probabilities=True))
    assert declared.verdict == "fail" and "output='auto'" in declared.explanation
    lost = probabilities(logits_unrecoverable=True, attacked_values_are_probabilities=True)
    assert judge(1, "probabilities", lost).explanation.startswith(
        "The model outputs probabilities and its logits cannot be recovered"
    )


@pytest.mark.parametrize(
    "zero_margin, non_finite, verdict",
    [
        (0.0, 0.0, "pass"),
        (0.005, 0.0, "warn"),
        (0.01, 0.0, "warn"),  # exactly the threshold
        (0.0101, 0.0, "fail"),
        (0.0, 0.001, "fail"),  # any NaN or Inf
    ],
)
def test_zero_gradient_rules(zero_margin, non_finite, verdict) -> None:
    m = GradientMeasurements(100, zero_margin, 0.0, non_finite)
    assert judge(2, "zero_gradients", m).verdict == verdict


def test_zero_gradient_sentences() -> None:
    cross_entropy_only = judge(2, "zero_gradients", GradientMeasurements(40, 0.0, 0.125, 0.0))
    assert cross_entropy_only.verdict == "pass"
    assert cross_entropy_only.explanation == (
        "Every one of the 40 subsample examples has a non-zero input gradient. Cross-entropy "
        "gradients vanish on 12.5% (softmax saturates in float32); the margin-loss attacks of "
        "the suite cover those."
    )
    non_finite = judge(2, "zero_gradients", GradientMeasurements(40, 0.5, 0.0, 0.025))
    assert non_finite.explanation.startswith("2.5% of the 40 subsample examples have NaN or Inf")
    masked = judge(2, "zero_gradients", GradientMeasurements(40, 0.5, 0.0, 0.0))
    assert masked.explanation.startswith("50.0% of the 40 subsample examples have exactly zero")


@pytest.mark.parametrize(
    "relative, flips, not_reproduced, verdict",
    [
        (0.0, 0, 0, "pass"),
        (1e-5, 0, 0, "pass"),  # exactly the warning threshold
        (1.01e-5, 0, 0, "warn"),
        (1e-3, 0, 0, "warn"),  # exactly the failing threshold
        (1.01e-3, 0, 0, "fail"),
        (0.0, 1, 0, "fail"),  # a changed prediction
        (0.0, 0, 1, "fail"),  # an adversarial a fresh pass did not confirm
    ],
)
def test_nondeterminism_rules(relative, flips, not_reproduced, verdict) -> None:
    m = DeterminismMeasurements(16, relative, flips, not_reproduced, 5)
    assert judge(3, "nondeterminism", m).verdict == verdict


def test_nondeterminism_sentence() -> None:
    result = judge(3, "nondeterminism", DeterminismMeasurements(16, 2e-6, 0, 0, 5))
    assert result.explanation == (
        "Three forward passes of the 16 subsample examples (batched twice, then one by one) "
        "differ by up to 2e-06 relative to the logit scale (float round-off); every adversarial "
        "reproduced."
    )
    assert result.details == {
        "relative_logit_change": 2e-6,
        "prediction_changes": 0,
        "adversarials_not_reproduced": 0,
        "adversarials_rechecked": 5,
    }


def row(fgsm, iterative, missed=0, broken=1, eps=0.1):
    return SingleStepAtEps(eps, fgsm, iterative, missed, broken)


@pytest.mark.parametrize(
    "at_eps, verdict",
    [
        (row(0.5, 0.4), "pass"),  # iterative attacks stronger
        (row(0.4, 0.4), "warn"),  # a tie
        (row(0.4, 0.4, broken=0), "pass"),  # a tie without FGSM breaking anything
        (row(0.0, 0.0), "pass"),  # a tie at zero accuracy
        (row(0.39, 0.4), "fail"),  # FGSM stronger
        (row(0.5, 0.4, missed=1), "fail"),  # FGSM found what the suite missed
    ],
)
def test_single_step_rules_at_one_eps(at_eps, verdict) -> None:
    assert single_step_at_eps(at_eps) == verdict


def test_single_step_result_reports_each_eps_verdict_and_a_rising_fgsm_curve() -> None:
    rows = [row(0.5, 0.4, eps=0.1), row(0.75, 0.3, eps=0.2)]
    result = judge(4, "single_step", SingleStepMeasurements(20, rows, True))
    assert result.verdict == "warn" and result.subsample == 20
    assert result.explanation == (
        "Iterative attacks beat one FGSM step (eps 0.1: FGSM 50.0% vs iterative 40.0%; eps 0.2: "
        "FGSM 75.0% vs iterative 30.0%; one FGSM step on each of the 20 examples). FGSM accuracy "
        "rises with eps: its gradient direction stops pointing at adversarials as the step "
        "grows, the mark of gradient masking (e.g. catastrophic overfitting of single-step "
        "adversarial training)."
    )
    assert result.details == {
        "per_eps": [
            {
                "eps": 0.1,
                "fgsm_accuracy": 0.5,
                "iterative_accuracy": 0.4,
                "missed_by_suite": 0,
                "verdict": "pass",
            },
            {
                "eps": 0.2,
                "fgsm_accuracy": 0.75,
                "iterative_accuracy": 0.3,
                "missed_by_suite": 0,
                "verdict": "pass",
            },
        ],
        "fgsm_accuracy_rises_with_eps": True,
    }
    failing = judge(4, "single_step", SingleStepMeasurements(20, [row(0.3, 0.4)], False))
    assert failing.verdict == "fail"
    assert failing.explanation.startswith("A single FGSM step did at least as well")


def test_monotonicity_rules() -> None:
    rise = AccuracyRise("after pgd", [0.1, 0.35], [0.25, 0.5])
    rising = judge(5, "monotonicity", MonotonicityMeasurements(None, [rise], 3))
    assert rising.verdict == "fail" and rising.subsample is None
    assert rising.explanation.startswith(
        "Accuracy rises with eps (after pgd: 25.0% at eps 0.1 but 50.0% at 0.35; 1 rise(s) in all)."
    )
    assert rising.details == {
        "rises": [{"line": "after pgd", "eps": [0.1, 0.35], "accuracy": [0.25, 0.5]}],
        "examples_robust_only_at_larger_eps": 3,
    }
    inverted = judge(5, "monotonicity", MonotonicityMeasurements(None, [], 1))
    assert inverted.verdict == "warn"
    assert "1 example(s) broken at a smaller eps" in inverted.explanation
    assert judge(5, "monotonicity", MonotonicityMeasurements(None, [], 0)).verdict == "pass"


@pytest.mark.parametrize("accuracy, verdict", [(0.25, "pass"), (0.2500001, "fail"), (0.0, "pass")])
def test_large_eps_fails_only_above_the_largest_class_share(accuracy, verdict) -> None:
    m = LargeEpsMeasurements(32, 0.5, "apgd-ce", accuracy, 0.25, 0.1, "linf")
    result = judge(6, "large_eps", m)
    assert result.verdict == verdict
    assert result.details == {
        "eps": 0.5,
        "attack": "apgd-ce",
        "accuracy": accuracy,
        "largest_class_share": 0.25,
        "chance": 0.1,
    }  # norm is internal
    assert result.explanation.startswith(
        "At linf eps 0.5 every image can be moved to the same mid-grey image, so at most the "
        "largest class's share (25.0%) can stay correct"
    )


@pytest.mark.parametrize(
    "counts, verdict", [([0, 0], "pass"), ([0, 1], "warn"), ([1, 0], "warn"), ([0, 2], "fail")]
)
def test_gradient_free_rules_share_of_the_correct_examples(counts, verdict) -> None:
    per_eps = [GradientFreeAtEps(0.1, counts[0]), GradientFreeAtEps(0.3, counts[1])]
    result = judge(7, "gradient_free", GradientFreeMeasurements(None, per_eps, 100))
    assert result.verdict == verdict
    assert result.details == {
        "per_eps": [{"eps": 0.1, "examples": counts[0]}, {"eps": 0.3, "examples": counts[1]}]
    }


def test_gradient_free_sentence_names_the_first_eps_with_most_examples() -> None:
    per_eps = [GradientFreeAtEps(0.1, 7), GradientFreeAtEps(0.2, 9), GradientFreeAtEps(0.3, 9)]
    result = judge(7, "gradient_free", GradientFreeMeasurements(None, per_eps, 40))
    assert result.explanation.startswith(
        "The gradient-free attack broke 9 of 40 correctly classified examples at eps 0.2 that"
    )


def convergence(newly_broken, adaptive=("apgd-ce", "apgd-dlr")):
    return ConvergenceMeasurements(
        200, 0.25, 2, list(adaptive), 0.5, 0.5 - newly_broken / 200, newly_broken
    )


@pytest.mark.parametrize("newly_broken, verdict", [(0, "pass"), (2, "warn"), (3, "fail")])
def test_convergence_rules_share_of_the_subsample(newly_broken, verdict) -> None:
    assert judge(8, "convergence", convergence(newly_broken)).verdict == verdict


def test_convergence_sentences() -> None:
    assert judge(8, "convergence", convergence(0, ())).explanation == (
        "With 2x the steps, queries and restarts at eps 0.25, accuracy on the 200-example "
        "subsample went from 50.0% to 50.0%: the suite has converged."
    )
    assert judge(8, "convergence", convergence(4)).explanation.startswith(
        "With 2x the steps, queries and restarts and apgd-ce, apgd-dlr at eps 0.25, accuracy on "
        "the 200-example subsample went from 50.0% to 48.0% (4 more examples broken)"
    )


def leaking(fgsm_accuracy=0.9, returned=(0, 0), robust_but_misclassified=0):
    per_eps = [
        LabelLeakingAtEps(0.1, fgsm_accuracy, 1, {"pgd": returned[0], "square": returned[1]})
    ]
    return LabelLeakingMeasurements(100, 0.9, 10, robust_but_misclassified, per_eps)


@pytest.mark.parametrize(
    "measurements, verdict",
    [
        (leaking(), "pass"),
        (leaking(fgsm_accuracy=0.9), "pass"),  # equal to clean accuracy
        (leaking(fgsm_accuracy=0.91), "fail"),  # above it
        (leaking(returned=(1, 0)), "warn"),
        (leaking(returned=(0, 2)), "fail"),  # the worst attack counts
        (leaking(robust_but_misclassified=1), "fail"),
    ],
)
def test_label_leaking_rules(measurements, verdict) -> None:
    assert judge(9, "label_leaking", measurements).verdict == verdict


def test_label_leaking_sentence_sums_the_worst_attack_over_eps() -> None:
    per_eps = [
        LabelLeakingAtEps(0.1, 0.5, 0, {"pgd": 2, "square": 3}),
        LabelLeakingAtEps(0.2, 0.25, 0, {"pgd": 4, "square": 1}),
    ]
    result = judge(9, "label_leaking", LabelLeakingMeasurements(100, 0.9, 10, 0, per_eps))
    assert result.verdict == "fail"
    assert result.explanation == (
        "One FGSM step with the true labels on each of the 100 examples (clean accuracy 90.0%) "
        "and every untargeted attack on the 10 misclassified ones, judged by fresh forward "
        "passes: attacks made examples correct (7 misclassified examples returned to their true "
        "class; FGSM accuracy 50.0%, 25.0%). An attack that helps the model leaks the label "
        "(Kurakin et al. 2017) or the forward pass is random; adversarial accuracy above clean "
        "accuracy is a red flag."
    )


@pytest.mark.parametrize(
    "reason, subsample, verdict, explanation",
    [
        (SkipReason.NOT_SELECTED, None, "not run", "Not selected for this run."),
        (
            SkipReason.NO_GRADIENT_ATTACK,
            None,
            "not run",
            "The suite has no gradient attack to compare with FGSM.",
        ),
        (SkipReason.SINGLE_EPS, None, "not run", "Needs at least two eps values."),
        (
            SkipReason.NO_ATTACK_PAIR,
            None,
            "not run",
            "Needs both a gradient attack and a gradient-free one (e.g. Square) in the suite.",
        ),
        (
            SkipReason.NOTHING_ROBUST,
            12,
            "pass",
            "None of the 12 subsample examples is robust at any eps; more budget cannot lower "
            "accuracy.",
        ),
    ],
)
def test_skipped_checks(reason, subsample, verdict, explanation) -> None:
    result = judge(8, "convergence", Skipped(subsample, reason))
    assert (result.number, result.name, result.verdict) == (8, "convergence", verdict)
    assert result.explanation == explanation
    assert result.subsample == subsample and result.details == {}
