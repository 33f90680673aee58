"""What each sanity check measured: numbers only, no verdict and no prose.

Each check returns one of these dataclasses; :mod:`robustkit.evaluation.checks.verdicts` turns
it into a verdict and its sentence. Every field goes to the report's ``details`` (in field
order, nested rows as dicts) except those with :data:`INTERNAL` metadata, which the verdict
rules read but the report leaves out. Shares are fractions in [0, 1]; eps are pixel units.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

INTERNAL = {"internal": True}  # field metadata: the verdict rules read it, details leave it out


def details_of(measurements: Any) -> Any:
    """The report's ``details`` of ``measurements``: its non-internal fields as a dict, nested
    dataclasses and lists of them converted the same way."""
    if is_dataclass(measurements):
        return {
            f.name: details_of(getattr(measurements, f.name))
            for f in fields(measurements)
            if not f.metadata.get("internal")
        }
    if isinstance(measurements, list):
        return [details_of(item) for item in measurements]
    return measurements


@dataclass(frozen=True)
class Measurements:
    """Base of every check's measurements.

    ``subsample``: examples the check ran extra passes or attacks on; None when it read only
    the main results.
    """

    subsample: int | None = field(metadata=INTERNAL)


class SkipReason(enum.Enum):
    """Why a check measured nothing."""

    NOT_SELECTED = "not selected"
    NO_GRADIENT_ATTACK = "no gradient attack"  # check 4 has nothing to compare FGSM with
    SINGLE_EPS = "single eps"  # check 5 needs two radii
    NO_ATTACK_PAIR = "no gradient and gradient-free pair"  # check 7
    NOTHING_ROBUST = "nothing robust"  # check 8: no robust example left to break


@dataclass(frozen=True)
class Skipped(Measurements):
    """The check measured nothing, for ``reason``."""

    reason: SkipReason = field(metadata=INTERNAL)


# ----------------------------------------------------------------------------- 1-3: the model


@dataclass(frozen=True)
class ProbabilityMeasurements(Measurements):
    """1. What the attacks take as logits. ``logits_unrecoverable``: the classifier attacks
    log(probabilities) because its logits cannot be recovered; ``saturated_share``: examples
    whose largest softmax probability rounds to 1 in float32."""

    logits_source: str
    raw_outputs_are_probabilities: bool
    attacked_values_are_probabilities: bool
    saturated_share: float
    logits_unrecoverable: bool = field(metadata=INTERNAL)


@dataclass(frozen=True)
class GradientMeasurements(Measurements):
    """2. Shares of subsample examples whose input gradient (margin / cross-entropy loss) is
    finite and exactly zero, and whose gradient of either loss has a NaN or Inf."""

    zero_margin_gradient_share: float
    zero_cross_entropy_gradient_share: float
    non_finite_gradient_share: float


@dataclass(frozen=True)
class DeterminismMeasurements(Measurements):
    """3. Largest logit change between identical forward passes, relative to 1 + the largest
    logit size; predictions it changed; suite adversarials a fresh pass did not confirm."""

    relative_logit_change: float
    prediction_changes: int
    adversarials_not_reproduced: int
    adversarials_rechecked: int


# ----------------------------------------------------------------------------- 4-9: the attacks


@dataclass(frozen=True)
class SingleStepAtEps:
    """4, at one eps: accuracy under one raw FGSM step and under the suite's gradient attacks;
    FGSM adversarials the whole suite missed; examples FGSM broke."""

    eps: float
    fgsm_accuracy: float
    iterative_accuracy: float
    missed_by_suite: int
    fgsm_broken: int = field(metadata=INTERNAL)


@dataclass(frozen=True)
class SingleStepMeasurements(Measurements):
    """4. FGSM against the iterative attacks at every eps."""

    per_eps: list[SingleStepAtEps]
    fgsm_accuracy_rises_with_eps: bool


@dataclass(frozen=True)
class AccuracyRise:
    """5. Accuracy of one line (worst case, after an attack, an attack alone) rising from
    ``eps[0]`` to the next radius ``eps[1]``."""

    line: str
    eps: list[float]
    accuracy: list[float]


@dataclass(frozen=True)
class MonotonicityMeasurements(Measurements):
    """5. Every rise of accuracy with eps; correctly classified examples broken at one eps
    that no attack broke at the next."""

    rises: list[AccuracyRise]
    examples_robust_only_at_larger_eps: int


@dataclass(frozen=True)
class LargeEpsMeasurements(Measurements):
    """6. Accuracy under ``attack`` at a radius ``eps`` of the ``norm`` that reaches a common
    mid-range image, against the largest class's share (its upper bound) and chance."""

    eps: float
    attack: str
    accuracy: float
    largest_class_share: float
    chance: float
    norm: str = field(metadata=INTERNAL)


@dataclass(frozen=True)
class GradientFreeAtEps:
    """7, at one eps: correctly classified examples only a gradient-free attack broke."""

    eps: float
    examples: int


@dataclass(frozen=True)
class GradientFreeMeasurements(Measurements):
    """7. Gradient-free successes every gradient attack missed, out of ``correct`` correctly
    classified examples."""

    per_eps: list[GradientFreeAtEps]
    correct: int = field(metadata=INTERNAL)


@dataclass(frozen=True)
class ConvergenceMeasurements(Measurements):
    """8. Subsample accuracy at ``eps`` before and after re-attacking with ``budget_factor``
    times the budget plus ``adaptive_attacks``; robust examples that re-attack broke."""

    eps: float
    budget_factor: int
    adaptive_attacks: list[str]
    accuracy: float
    accuracy_with_doubled_budget: float
    newly_broken: int


@dataclass(frozen=True)
class LabelLeakingAtEps:
    """9, at one eps: accuracy under one raw FGSM step; misclassified examples it returned to
    their true class; the same per untargeted suite attack (name -> count, inside the ball)."""

    eps: float
    fgsm_accuracy: float
    fgsm_returned_to_true_class: int
    returned_to_true_class: dict[str, int]


@dataclass(frozen=True)
class LabelLeakingMeasurements(Measurements):
    """9. Attacks helping the model: per eps, plus examples the records call robust although
    they are misclassified."""

    clean_accuracy: float
    misclassified: int
    robust_but_misclassified: int
    per_eps: list[LabelLeakingAtEps]
