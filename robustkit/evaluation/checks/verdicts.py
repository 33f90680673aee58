"""The one place where a check's measurements become a verdict and its sentence.

The thresholds below are the rules' whole table of numbers; :data:`SKIPPED` says what a
check that measured nothing reports; one judge per measurement type decides "pass", "warn"
or "fail" and writes why. :func:`judge` wraps the outcome as the report's
:class:`~robustkit.evaluation.report.CheckResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from robustkit.evaluation.checks.measurements import (
    ConvergenceMeasurements,
    DeterminismMeasurements,
    GradientFreeMeasurements,
    GradientMeasurements,
    LabelLeakingMeasurements,
    LargeEpsMeasurements,
    Measurements,
    MonotonicityMeasurements,
    ProbabilityMeasurements,
    SingleStepAtEps,
    SingleStepMeasurements,
    Skipped,
    SkipReason,
    details_of,
)
from robustkit.evaluation.report import CheckResult

ZERO_GRADIENT_FAIL_SHARE = 0.01  # 2: more examples than this with zero gradients: fail
LOGIT_NOISE_WARN = 1e-5  # 3: relative logit change between identical passes: warn above
LOGIT_NOISE_FAIL = 1e-3  # ... fail above
SMALL_SHARE = 0.01  # 7-9: a finding on more than this share of examples (and > 1) fails

SKIPPED: dict[SkipReason, tuple[str, str]] = {
    SkipReason.NOT_SELECTED: ("not run", "Not selected for this run."),
    SkipReason.NO_GRADIENT_ATTACK: (
        "not run",
        "The suite has no gradient attack to compare with FGSM.",
    ),
    SkipReason.SINGLE_EPS: ("not run", "Needs at least two eps values."),
    SkipReason.NO_ATTACK_PAIR: (
        "not run",
        "Needs both a gradient attack and a gradient-free one (e.g. Square) in the suite.",
    ),
    SkipReason.NOTHING_ROBUST: (
        "pass",
        "None of the {subsample} subsample examples is robust at any eps; more budget cannot "
        "lower accuracy.",
    ),
}


class Judgement(NamedTuple):
    """A verdict and its sentence; ``details``: what the report's details hold where the judge
    adds to the measurements (check 4 adds each eps's verdict), None for the measurements'
    own."""

    verdict: str
    explanation: str
    details: dict[str, Any] | None = None


def worst(verdicts: Sequence[str]) -> str:
    """The most severe of ``verdicts`` ("not run" < "pass" < "warn" < "fail")."""
    order = ("not run", "pass", "warn", "fail")
    return max(verdicts, key=order.index, default="not run")


def share_verdict(count: int, total: int) -> str:
    """pass for no examples, fail for more than SMALL_SHARE of ``total`` (and more than one),
    warn for fewer."""
    if count == 0:
        return "pass"
    return "fail" if count > max(1, SMALL_SHARE * total) else "warn"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


# ----------------------------------------------------------------------------- 1-3: the model


def _probabilities(m: ProbabilityMeasurements) -> Judgement:
    read_on = f" Outputs read on {m.subsample} subsample examples."
    if m.logits_unrecoverable:
        return Judgement(
            "fail",
            "The model outputs probabilities and its logits cannot be recovered, so the attacks "
            "ascend log(probabilities), which saturate (softmax rounds to 1 in float32) and can "
            "mask gradients: robust accuracy may be overestimated. Pass a model whose last "
            f"layer outputs logits.{read_on}",
        )
    if m.attacked_values_are_probabilities:
        return Judgement(
            "fail",
            "The values attacked as logits are probabilities (non-negative rows summing to 1), "
            "e.g. a softmax model declared with output='logits'. Losses on them are flat and "
            f"mask gradients. Declare output='auto' or pass the pre-softmax model.{read_on}",
        )
    if m.raw_outputs_are_probabilities:
        return Judgement(
            "pass",
            f"The model ends in softmax; the attacks use its logits ({m.logits_source}).{read_on}",
        )
    return Judgement(
        "pass", f"The model outputs logits ({m.logits_source}); rows do not sum to 1.{read_on}"
    )


def _zero_gradients(m: GradientMeasurements) -> Judgement:
    n = m.subsample
    if m.non_finite_gradient_share > 0:
        return Judgement(
            "fail",
            f"{_percent(m.non_finite_gradient_share)} of the {n} subsample examples have NaN or "
            "Inf input gradients; gradient attacks cannot work there and their numbers are "
            "meaningless.",
        )
    if m.zero_margin_gradient_share > 0:
        return Judgement(
            "fail" if m.zero_margin_gradient_share > ZERO_GRADIENT_FAIL_SHARE else "warn",
            f"{_percent(m.zero_margin_gradient_share)} of the {n} subsample examples have "
            "exactly zero input gradients of the margin loss: something (a stop-gradient, "
            "quantization or thresholding of the input) masks gradients, so gradient attacks "
            "are blind there. Trust only the gradient-free attack, or attack a differentiable "
            "surrogate (BPDA).",
        )
    explanation = f"Every one of the {n} subsample examples has a non-zero input gradient."
    if m.zero_cross_entropy_gradient_share > 0:
        explanation += (
            f" Cross-entropy gradients vanish on {_percent(m.zero_cross_entropy_gradient_share)} "
            "(softmax saturates in float32); the margin-loss attacks of the suite cover those."
        )
    return Judgement("pass", explanation)


def _nondeterminism(m: DeterminismMeasurements) -> Judgement:
    summary = (
        f"Three forward passes of the {m.subsample} subsample examples (batched twice, then one "
        f"by one) differ by up to {m.relative_logit_change:.2g} relative to the logit scale"
    )
    changed = m.prediction_changes or m.adversarials_not_reproduced
    if m.relative_logit_change > LOGIT_NOISE_FAIL or changed:
        return Judgement(
            "fail",
            f"{summary}, changing {m.prediction_changes} predictions; "
            f"{m.adversarials_not_reproduced} of {m.adversarials_rechecked} adversarials did "
            "not reproduce on a fresh pass. The forward pass is random or batch-dependent "
            "(dropout at inference, randomized defenses, batch statistics), which hides "
            "gradients from single-sample attacks: attack the expectation over the randomness "
            "(EOT) before trusting this.",
        )
    if m.relative_logit_change > LOGIT_NOISE_WARN:
        return Judgement(
            "warn", f"{summary}: more than float round-off, though no prediction changed."
        )
    return Judgement("pass", f"{summary} (float round-off); every adversarial reproduced.")


# ----------------------------------------------------------------------------- 4-9: the attacks


def single_step_at_eps(row: SingleStepAtEps) -> str:
    """4's verdict at one eps: fail when FGSM beat the iterative attacks or found what the
    suite missed, warn when it merely tied them on a non-trivial accuracy."""
    if row.missed_by_suite or row.fgsm_accuracy < row.iterative_accuracy:
        return "fail"
    tied = row.fgsm_accuracy == row.iterative_accuracy and row.fgsm_accuracy > 0
    return "warn" if row.fgsm_broken and tied else "pass"


def _single_step(m: SingleStepMeasurements) -> Judgement:
    verdicts = [single_step_at_eps(row) for row in m.per_eps]
    rises = m.fgsm_accuracy_rises_with_eps
    table = "; ".join(
        f"eps {row.eps:g}: FGSM {_percent(row.fgsm_accuracy)} vs iterative "
        f"{_percent(row.iterative_accuracy)}"
        for row in m.per_eps
    )
    where = f"one FGSM step on each of the {m.subsample} examples"
    if "fail" in verdicts:
        explanation = (
            f"A single FGSM step did at least as well as the iterative attacks and found "
            f"adversarials the suite missed ({table}; {where}). Iterative attacks are strictly "
            "stronger on honest models; this points at gradient masking or badly tuned steps. "
            "The reported numbers are too high."
        )
    elif "warn" in verdicts:
        explanation = (
            f"Iterative attacks broke no more examples than one FGSM step at some eps ({table}; "
            f"{where}); more steps should help unless gradients mislead."
        )
    else:
        explanation = f"Iterative attacks beat one FGSM step ({table}; {where})."
    if rises:
        explanation += (
            " FGSM accuracy rises with eps: its gradient direction stops pointing at "
            "adversarials as the step grows, the mark of gradient masking (e.g. catastrophic "
            "overfitting of single-step adversarial training)."
        )
    details = details_of(m)
    for row, verdict in zip(details["per_eps"], verdicts, strict=True):
        row["verdict"] = verdict
    return Judgement(worst([*verdicts, "warn" if rises else "pass"]), explanation, details)


def _monotonicity(m: MonotonicityMeasurements) -> Judgement:
    if m.rises:
        first = m.rises[0]
        return Judgement(
            "fail",
            f"Accuracy rises with eps ({first.line}: {_percent(first.accuracy[0])} at eps "
            f"{first.eps[0]:g} but {_percent(first.accuracy[1])} at {first.eps[1]:g}; "
            f"{len(m.rises)} rise(s) in all). A larger ball contains the smaller one, so the "
            "attacks fail at larger eps where adversarials exist: gradient masking or step "
            "sizes that do not scale.",
        )
    if m.examples_robust_only_at_larger_eps:
        return Judgement(
            "warn",
            f"Accuracy falls with eps, but {m.examples_robust_only_at_larger_eps} example(s) "
            "broken at a smaller eps survived a larger one, where the same adversarial was "
            "allowed.",
        )
    return Judgement("pass", "Robust accuracy never rises with eps, overall or per example.")


def _large_eps(m: LargeEpsMeasurements) -> Judgement:
    setting = (
        f"At {m.norm} eps {m.eps:.4g} every image can be moved to the same mid-grey image, so "
        f"at most the largest class's share ({_percent(m.largest_class_share)}) can stay correct"
    )
    if m.accuracy > m.largest_class_share:
        return Judgement(
            "fail",
            f"{setting}, yet {m.attack} left {_percent(m.accuracy)} of the {m.subsample} "
            "subsample examples correct: the attack cannot find adversarials that certainly "
            "exist, so its numbers at small eps cannot be trusted (gradient masking or a broken "
            "attack).",
        )
    return Judgement(
        "pass",
        f"{setting}; {m.attack} brought accuracy on the {m.subsample} subsample examples to "
        f"{_percent(m.accuracy)}.",
    )


def _gradient_free(m: GradientFreeMeasurements) -> Judgement:
    verdict = worst([share_verdict(row.examples, m.correct) for row in m.per_eps])
    if verdict == "pass":
        return Judgement(
            verdict,
            "The gradient-free attack broke no example that survived every gradient attack.",
        )
    most = max(m.per_eps, key=lambda row: row.examples)  # the first of equals
    return Judgement(
        verdict,
        f"The gradient-free attack broke {most.examples} of {m.correct} correctly classified "
        f"examples at eps {most.eps:g} that every gradient attack missed. Black-box beating "
        "white-box means the gradients mislead (masking) or the gradient attacks are too weak "
        "there.",
    )


def _convergence(m: ConvergenceMeasurements) -> Judgement:
    verdict = share_verdict(m.newly_broken, m.subsample)
    added = f" and {', '.join(m.adaptive_attacks)}" if m.adaptive_attacks else ""
    setting = (
        f"With {m.budget_factor}x the steps, queries and restarts{added} at eps {m.eps:g}, "
        f"accuracy on the {m.subsample}-example subsample went from {_percent(m.accuracy)} to "
        f"{_percent(m.accuracy_with_doubled_budget)}"
    )
    if verdict == "pass":
        return Judgement(verdict, f"{setting}: the suite has converged.")
    return Judgement(
        verdict,
        f"{setting} ({m.newly_broken} more examples broken): the attacks have not converged, so "
        "the reported robust accuracy overestimates. Raise steps and restarts until it stops "
        "falling.",
    )


def _label_leaking(m: LabelLeakingMeasurements) -> Judgement:
    returned = [max(row.returned_to_true_class.values(), default=0) for row in m.per_eps]
    verdicts = [
        "fail" if row.fgsm_accuracy > m.clean_accuracy else share_verdict(count, m.subsample)
        for row, count in zip(m.per_eps, returned, strict=True)
    ]
    if m.robust_but_misclassified:
        verdicts.append("fail")
    verdict = worst(verdicts)
    setting = (
        f"One FGSM step with the true labels on each of the {m.subsample} examples (clean "
        f"accuracy {_percent(m.clean_accuracy)}) and every untargeted attack on the "
        f"{m.misclassified} misclassified ones, judged by fresh forward passes"
    )
    if verdict == "pass":
        return Judgement(
            verdict,
            f"{setting}: no attack raised accuracy above clean or returned a misclassified "
            "example to its true class.",
        )
    return Judgement(
        verdict,
        f"{setting}: attacks made examples correct ({sum(returned)} misclassified examples "
        "returned to their true class; FGSM accuracy "
        f"{', '.join(_percent(row.fgsm_accuracy) for row in m.per_eps)}). An attack that helps "
        "the model leaks the label (Kurakin et al. 2017) or the forward pass is random; "
        "adversarial accuracy above clean accuracy is a red flag.",
    )


def _skipped(m: Skipped) -> Judgement:
    verdict, sentence = SKIPPED[m.reason]
    return Judgement(verdict, sentence.format(subsample=m.subsample))


JUDGES: dict[type[Measurements], Callable[[Any], Judgement]] = {
    Skipped: _skipped,
    ProbabilityMeasurements: _probabilities,
    GradientMeasurements: _zero_gradients,
    DeterminismMeasurements: _nondeterminism,
    SingleStepMeasurements: _single_step,
    MonotonicityMeasurements: _monotonicity,
    LargeEpsMeasurements: _large_eps,
    GradientFreeMeasurements: _gradient_free,
    ConvergenceMeasurements: _convergence,
    LabelLeakingMeasurements: _label_leaking,
}


def judge(number: int, name: str, measurements: Measurements) -> CheckResult:
    """The report's result of check ``number`` (``name``) from what it measured."""
    verdict, explanation, details = JUDGES[type(measurements)](measurements)
    return CheckResult(
        number,
        name,
        verdict,
        explanation,
        measurements.subsample,
        details_of(measurements) if details is None else details,
    )
