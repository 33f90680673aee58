"""Sanity checks that catch an evaluation fooling itself (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"; Croce & Hein 2020, AutoAttack).

Each check measures (:mod:`.model_checks` for the model, :mod:`.attack_checks` for the attacks'
results) and returns numbers only; :mod:`.verdicts` alone turns them into a verdict ("pass",
"warn", "fail", "not run") and its sentence. Checks 1, 2, 3, 6 and 8 run extra passes or
attacks on a fixed random subsample, 4 and 9 one raw FGSM step per example, 5 and 7 read the
main results only.

Adversarials that checks 4 and 8 find are verified like the suite's (inside the ball and the
bounds, misclassified by a fresh forward pass) and lower the headline robust accuracy, at their
eps and every larger one (:meth:`CheckFindings.lower`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robustkit.errors import InputError
from robustkit.evaluation.checks.attack_checks import (
    measure_convergence,
    measure_gradient_free,
    measure_label_leaking,
    measure_large_eps,
    measure_monotonicity,
    measure_single_step,
)
from robustkit.evaluation.checks.context import (
    CheckAttacker,
    CheckContext,
    CheckData,
    CheckFindings,
    CheckProgress,
    SuiteRun,
)
from robustkit.evaluation.checks.measurements import Measurements, Skipped, SkipReason
from robustkit.evaluation.checks.model_checks import (
    measure_nondeterminism,
    measure_probabilities,
    measure_zero_gradients,
)
from robustkit.evaluation.checks.verdicts import judge
from robustkit.evaluation.report import CheckResult

# the nine checks in order: number i is the i-th entry
CHECKS: dict[str, Callable[[CheckContext], Measurements]] = {
    "probabilities": measure_probabilities,
    "zero_gradients": measure_zero_gradients,
    "nondeterminism": measure_nondeterminism,
    "single_step": measure_single_step,
    "monotonicity": measure_monotonicity,
    "large_eps": measure_large_eps,
    "gradient_free": measure_gradient_free,
    "convergence": measure_convergence,
    "label_leaking": measure_label_leaking,
}


def select_checks(checks: str | Sequence[str | int] | None) -> list[str]:
    """Check names for "all", None (none) or a list of names or numbers (1-9)."""
    if checks is None:
        return []
    if isinstance(checks, str):
        checks = list(CHECKS) if checks == "all" else [checks]
    names = []
    for check in checks:
        is_number = isinstance(check, int) and 1 <= check <= len(CHECKS)
        name = list(CHECKS)[check - 1] if is_number else check
        if name not in CHECKS:
            raise InputError(f"Unknown check {check!r}; use 1-9 or one of {list(CHECKS)}.")
        names.append(name)
    return names


def run_checks(context: CheckContext, names: Sequence[str]) -> list[CheckResult]:
    """All nine checks in order, judged; those not in ``names`` are reported as not run."""
    not_selected = Skipped(None, SkipReason.NOT_SELECTED)
    return [
        judge(number, name, measure(context) if name in names else not_selected)
        for number, (name, measure) in enumerate(CHECKS.items(), start=1)
    ]


__all__ = [
    "CHECKS",
    "CheckAttacker",
    "CheckContext",
    "CheckData",
    "CheckFindings",
    "CheckProgress",
    "SuiteRun",
    "run_checks",
    "select_checks",
]
