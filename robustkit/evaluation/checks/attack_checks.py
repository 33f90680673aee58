"""Checks 4-9 measure the attacks' results: against one FGSM step, across eps, at a radius where
adversarials certainly exist, gradient-free against gradient attacks, with a doubled budget,
and on examples misclassified to begin with.

Checks 5 and 7 read the main results only; 4 and 9 add one raw FGSM step per example (and 9
re-attacks the misclassified ones); 6 and 8 attack the check subsample. Verified adversarials
that checks 4 and 8 find go to :class:`~robustkit.evaluation.checks.context.CheckFindings`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from robustkit.attacks import APGD, is_robust
from robustkit.evaluation.checks.context import CheckContext
from robustkit.evaluation.checks.measurements import (
    AccuracyRise,
    ConvergenceMeasurements,
    GradientFreeAtEps,
    GradientFreeMeasurements,
    LabelLeakingAtEps,
    LabelLeakingMeasurements,
    LargeEpsMeasurements,
    Measurements,
    MonotonicityMeasurements,
    SingleStepAtEps,
    SingleStepMeasurements,
    Skipped,
    SkipReason,
)
from robustkit.evaluation.suites import SuiteAttack
from robustkit.norms import make_norm

DOUBLED_BUDGET = 2  # check 8 multiplies steps, queries and restarts by this
ADAPTIVE_STEPS = 100  # iterations of the APGD runs check 8 adds

# key streams of the checks' own attacks (the main evaluation draws from stream 0)
LARGE_EPS_STREAM = 6
CONVERGENCE_STREAM = 8
LABEL_LEAKING_STREAM = 9


def measure_single_step(context: CheckContext) -> Measurements:
    """4. Iterative gradient attacks must beat one FGSM step: FGSM's accuracy and the gradient
    attacks' at every eps, on every example."""
    data, suite = context.data, context.suite
    gradient = suite.gradient_attacks
    if not gradient:
        return Skipped(None, SkipReason.NO_GRADIENT_ATTACK)
    everything = np.arange(len(data.x))
    rows = []
    for e, eps in enumerate(suite.epsilons):
        out = context.attacker.fgsm(eps)
        fgsm_broken = data.correct & (out.logits.argmax(1) != data.y)
        fgsm_broken &= out.inside
        context.findings.record(e, everything, fgsm_broken)
        iterative_broken = suite.records.broken[gradient, e].any(axis=0)
        rows.append(
            SingleStepAtEps(
                eps=eps,
                fgsm_accuracy=float(np.mean(is_robust(data.correct, fgsm_broken))),
                iterative_accuracy=float(np.mean(is_robust(data.correct, iterative_broken))),
                missed_by_suite=int(np.sum(fgsm_broken & suite.records.robust[e])),
                fgsm_broken=int(fgsm_broken.sum()),
            )
        )
    rises = bool(np.any(np.diff([row.fgsm_accuracy for row in rows]) > 0))
    return SingleStepMeasurements(len(everything), rows, rises)


def measure_monotonicity(context: CheckContext) -> Measurements:
    """5. Robust accuracy must not rise with eps: every rise of the worst case, of what is left
    after each attack, and (independent mode) of each attack alone."""
    suite, correct = context.suite, context.data.correct
    if len(suite.epsilons) < 2:
        return Skipped(None, SkipReason.SINGLE_EPS)
    records = suite.records
    lines = {"worst case": records.robust.mean(axis=1)}
    for a, spec in enumerate(suite.specs):
        lines[f"after {spec.name}"] = is_robust(correct, records.broken[: a + 1].any(0)).mean(1)
        if not suite.cascade:
            lines[spec.name] = is_robust(correct, records.broken[a]).mean(axis=1)
    rises = [
        AccuracyRise(
            line=name,
            eps=[suite.epsilons[e], suite.epsilons[e + 1]],
            accuracy=[float(values[e]), float(values[e + 1])],
        )
        for name, values in lines.items()
        for e in range(len(values) - 1)
        if values[e + 1] > values[e]
    ]
    # examples broken at a smaller eps that no attack broke at the next larger one (the headline
    # carries them over as broken; the attacks' own misses show here)
    missed = ~records.broken[:, 1:].any(axis=0)
    inversions = int(np.sum(missed & ~records.robust[:-1] & correct))
    return MonotonicityMeasurements(None, rises, inversions)


def large_eps(norm_name: str, bounds: tuple[float, float], shape: Sequence[int]) -> float:
    """The radius (pixel units) at which every image can reach the same mid-range image."""
    half = (bounds[1] - bounds[0]) / 2
    return half if norm_name == "linf" else half * float(np.sqrt(np.prod(shape)))


def measure_large_eps(context: CheckContext) -> LargeEpsMeasurements:
    """6. At a radius that lets every image become the same grey image, accuracy must drop to
    at most the largest class's share: the first untargeted gradient attack (else the first
    attack) on the subsample there."""
    data, suite = context.data, context.suite
    classifier = data.classifier
    untargeted = [a for a in suite.gradient_attacks if not suite.specs[a].top_k_targets]
    chosen = (untargeted or list(range(len(suite.specs))))[0]
    spec = suite.specs[chosen]
    eps = large_eps(suite.norm_name, classifier.bounds, classifier.input_shape)
    idx = data.subsample
    result = context.attacker.cascade(
        [(spec, suite.attacks[chosen])],
        make_norm(suite.norm_name, eps),
        idx,
        LARGE_EPS_STREAM,
        "large_eps",
    )
    return LargeEpsMeasurements(
        subsample=len(idx),
        eps=eps,
        attack=spec.name,
        accuracy=float(result.robust.mean()),
        largest_class_share=float(np.bincount(data.y[idx]).max() / len(idx)),
        chance=1 / classifier.num_classes,
        norm=suite.norm_name,
    )


def measure_gradient_free(context: CheckContext) -> Measurements:
    """7. A gradient-free attack must not break examples every gradient attack missed: how many
    it broke at each eps."""
    suite, correct = context.suite, context.data.correct
    gradient, free = suite.gradient_attacks, suite.gradient_free_attacks
    if not gradient or not free:
        return Skipped(None, SkipReason.NO_ATTACK_PAIR)
    broken = suite.records.broken
    counts = (broken[free].any(axis=0) & ~broken[gradient].any(axis=0) & correct).sum(axis=1)
    per_eps = [
        GradientFreeAtEps(eps, int(count))
        for eps, count in zip(suite.epsilons, counts, strict=True)
    ]
    return GradientFreeMeasurements(None, per_eps, int(correct.sum()))


def measure_convergence(context: CheckContext) -> Measurements:
    """8. Doubling steps, queries and restarts must not lower accuracy further: the suite with
    DOUBLED_BUDGET and APGD-CE / APGD-DLR (step-size schedules that halve where progress
    stalls) re-attack the subsample at the most telling eps."""
    data, suite = context.data, context.suite
    records = suite.records
    n = len(data.subsample)
    idx = data.indices(data.correct)
    robust_counts = records.robust[:, idx].sum(axis=1)
    if len(idx) == 0 or not robust_counts.any():
        return Skipped(n, SkipReason.NOTHING_ROBUST)
    # of the eps with robust examples left, the one where accuracy is nearest half the clean
    # level tells most; ties: the larger eps
    distance = np.where(robust_counts > 0, np.abs(robust_counts - len(idx) / 2), np.inf)
    e = int(np.flatnonzero(distance == distance.min())[-1])
    norm = make_norm(suite.norm_name, suite.epsilons[e])
    doubled = [(spec, spec.build(norm, DOUBLED_BUDGET, seed=suite.seed)) for spec in suite.specs]
    adaptive = [
        (
            SuiteAttack(f"apgd-{loss}", APGD),
            APGD(norm, steps=ADAPTIVE_STEPS, loss=loss, seed=suite.seed),
        )
        for loss in ("ce", "dlr")
        if not any(spec.name == f"apgd-{loss}" for spec in suite.specs)
    ]
    result = context.attacker.cascade(
        doubled + adaptive, norm, idx, CONVERGENCE_STREAM, "convergence"
    )
    before = records.robust[e, idx]
    context.findings.record(e, idx, ~result.robust & data.correct[idx])
    return ConvergenceMeasurements(
        subsample=n,
        eps=suite.epsilons[e],
        budget_factor=DOUBLED_BUDGET,
        adaptive_attacks=[spec.name for spec, _ in adaptive],
        accuracy=float(before.sum() / n),
        accuracy_with_doubled_budget=float(np.sum(before & result.robust) / n),
        newly_broken=int(np.sum(before & ~result.robust)),
    )


def measure_label_leaking(context: CheckContext) -> LabelLeakingMeasurements:
    """9. Adversarial accuracy must not exceed clean accuracy (label leaking): one FGSM step on
    every example, and every untargeted attack on the misclassified ones, judged by fresh
    forward passes."""
    data, suite, attacker = context.data, context.suite, context.attacker
    wrong = np.flatnonzero(~data.correct)
    per_eps = []
    for eps in suite.epsilons:
        fgsm_correct = attacker.fgsm(eps).logits.argmax(1) == data.y  # a fresh pass
        returned = {}
        for a in suite.untargeted_attacks if len(wrong) else []:
            back, inside = attacker.returned_and_inside(
                suite.attacks[a], wrong, LABEL_LEAKING_STREAM, "label_leaking", eps
            )
            returned[suite.specs[a].name] = int(np.sum(back & inside))
        per_eps.append(
            LabelLeakingAtEps(
                eps=eps,
                fgsm_accuracy=float(np.mean(fgsm_correct)),
                fgsm_returned_to_true_class=int(np.sum(fgsm_correct[wrong])),
                returned_to_true_class=returned,
            )
        )
    return LabelLeakingMeasurements(
        subsample=len(data.x),
        clean_accuracy=float(np.mean(data.correct)),
        misclassified=len(wrong),
        robust_but_misclassified=int(np.sum(suite.records.robust & ~data.correct)),
        per_eps=per_eps,
    )
