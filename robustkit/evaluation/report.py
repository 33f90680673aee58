"""`RobustnessReport`: the evaluator's result as values that convert to NumPy and to JSON.

The JSON form follows a versioned schema (:mod:`robustkit.evaluation.schema`); reading it back
with :meth:`RobustnessReport.from_json` gives an equal report (adversarial images, which are
never written to JSON, excepted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from robustkit.errors import InputError
from robustkit.evaluation.schema import SCHEMA_NAME, SCHEMA_VERSION, VERDICTS, validate_report
from robustkit.io.reports import to_jsonable


@dataclass
class AttackOutcome:
    """One attack of the suite at one eps.

    Attributes:
        attack: the suite attack's name; eps: the radius (pixel units).
        attacked: examples this attack ran on (cascade: those still robust when its turn came).
        broken: examples it turned into adversarials (misclassified, inside the ball).
        robust_accuracy: cascade mode: accuracy left after this attack and those before it;
            independent mode: accuracy under this attack alone.
        gradient_evaluations, forward_evaluations: what it spent (summed over examples).
        full_budget_gradient_evaluations, full_budget_forward_evaluations: what running it on
            every correctly classified example without early stopping would spend.
        wall_time_s: seconds.
    """

    attack: str
    eps: float
    attacked: int
    broken: int
    robust_accuracy: float
    gradient_evaluations: int
    forward_evaluations: int
    full_budget_gradient_evaluations: int
    full_budget_forward_evaluations: int
    wall_time_s: float


@dataclass
class CheckResult:
    """A sanity check's verdict ("pass", "warn", "fail" or "not run") and why.

    ``subsample`` is the number of examples it ran extra attacks on (None when it used only the
    main results); ``details`` holds its numbers.
    """

    number: int
    name: str
    verdict: str
    explanation: str
    subsample: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise InputError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")


@dataclass
class ExampleRecords:
    """Per-example results; E = number of eps, A = attacks, N = examples.

    Attributes:
        labels, clean_pred: int64 [N].
        robust: bool [E, N], correctly classified under every attack (the worst case).
        broken_by: int64 [E, N], index of the first attack that broke the example, -1 if none
            did, -2 if it was misclassified to begin with (and so never attacked).
        adversarial_pred: int64 [E, N], prediction on the kept adversarial (the breaking one,
            else the one with the largest margin; the clean image if never attacked).
        adversarial_margin: float32 [E, N], best other logit minus true-class logit there
            (> 0: misclassified).
        linf, l2: float32 [E, N], its distance from the clean image (pixel units).
        evaluations: int64 [E, N], gradient steps plus queries spent on the example.
        attacked, broken: bool [A, E, N], which attack ran on / broke which example.
    """

    labels: np.ndarray
    clean_pred: np.ndarray
    robust: np.ndarray
    broken_by: np.ndarray
    adversarial_pred: np.ndarray
    adversarial_margin: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    evaluations: np.ndarray
    attacked: np.ndarray
    broken: np.ndarray

    DTYPES: ClassVar[dict[str, Any]] = {
        "labels": np.int64,
        "clean_pred": np.int64,
        "robust": np.bool_,
        "broken_by": np.int64,
        "adversarial_pred": np.int64,
        "adversarial_margin": np.float32,
        "linf": np.float32,
        "l2": np.float32,
        "evaluations": np.int64,
        "attacked": np.bool_,
        "broken": np.bool_,
    }

    def __post_init__(self) -> None:
        for name, dtype in self.DTYPES.items():
            setattr(self, name, np.asarray(getattr(self, name), dtype=dtype))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested lists."""
        return {name: getattr(self, name).tolist() for name in self.DTYPES}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExampleRecords:
        return cls(**{name: data[name] for name in cls.DTYPES})


@dataclass
class RobustnessReport:
    """Everything an evaluation found and how it was run.

    Attributes:
        norm: "linf" or "l2"; bounds: (low, high) pixel bounds; epsilons: radii, ascending.
        suite: "quick", "standard", "plus" or "custom"; attacks: one description per suite
            attack, in the order run (name, class, options, ``configs`` = every
            hyperparameter at each eps, ``full_budget_per_example``).
        mode: "cascade" (each attack sees only examples still robust) or "independent".
        seed: seed of every random draw.
        num_examples, num_classes: data size; logits_source: where the logits come from.
        clean_accuracy: share of examples classified correctly.
        robust_accuracy: [E] worst case per eps: clean-correct and no verified adversarial found
            by any attack or sanity check at that eps or a smaller one.
        robust_accuracy_before_checks: [E] the same from the suite's attacks alone.
        outcomes: per attack and eps (eps-major order).
        verification: counts from re-checking every claimed adversarial: ``rechecked``,
            ``outside_ball`` (rejected), ``disagreements`` (a fresh forward pass disagreed, so
            the claim did not count), ``broken_by_checks`` (examples only a check's attack broke,
            summed over eps).
        checks: the sanity checks.
        cost: evaluations spent and what the full budget would have cost.
        timing: wall times in seconds (``total``, ``clean``, ``attacks``, ``checks``).
        settings: the evaluator's own options (batch size, check subsample size, checks run).
        environment: versions and devices.
        examples: per-example records (when asked for).
        adversarial_images: float32 [E, N, H, W, C] (when asked for; never in JSON).
    """

    norm: str
    bounds: tuple[float, float]
    epsilons: list[float]
    suite: str
    attacks: list[dict[str, Any]]
    mode: str
    seed: int
    num_examples: int
    num_classes: int
    logits_source: str
    clean_accuracy: float
    robust_accuracy: list[float]
    robust_accuracy_before_checks: list[float]
    outcomes: list[AttackOutcome]
    verification: dict[str, int]
    checks: list[CheckResult]
    cost: dict[str, Any]
    timing: dict[str, float]
    settings: dict[str, Any]
    environment: dict[str, Any]
    examples: ExampleRecords | None = None
    adversarial_images: np.ndarray | None = None

    # ---------------------------------------------------------------- views

    @property
    def attack_names(self) -> list[str]:
        return [attack["name"] for attack in self.attacks]

    def outcome(self, attack: str, eps: float) -> AttackOutcome:
        """The outcome of the named attack at eps."""
        for outcome in self.outcomes:
            if outcome.attack == attack and np.isclose(outcome.eps, eps):
                return outcome
        raise InputError(f"No outcome for attack {attack!r} at eps {eps!r}.")

    def attack_accuracy(self) -> np.ndarray:
        """[A, E] robust accuracy per attack (see :attr:`AttackOutcome.robust_accuracy`)."""
        return np.array(
            [
                [self.outcome(name, eps).robust_accuracy for eps in self.epsilons]
                for name in self.attack_names
            ],
            dtype=np.float64,
        ).reshape(len(self.attacks), len(self.epsilons))

    def check(self, name_or_number: str | int) -> CheckResult:
        """The check with this name or number."""
        for result in self.checks:
            if name_or_number in (result.name, result.number):
                return result
        raise InputError(f"No check {name_or_number!r} in this report.")

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if check.verdict == "fail"]

    def to_numpy(self) -> dict[str, Any]:
        """The numbers as NumPy arrays: epsilons [E], clean_accuracy, robust_accuracy [E]
        (worst case), attack_names, attack_accuracy [A, E] and the per-example records."""
        arrays: dict[str, Any] = {
            "epsilons": np.asarray(self.epsilons, dtype=np.float64),
            "clean_accuracy": np.float64(self.clean_accuracy),
            "robust_accuracy": np.asarray(self.robust_accuracy, dtype=np.float64),
            "attack_names": np.asarray(self.attack_names),
            "attack_accuracy": self.attack_accuracy(),
        }
        if self.examples is not None:
            arrays.update({name: getattr(self.examples, name) for name in ExampleRecords.DTYPES})
        if self.adversarial_images is not None:
            arrays["adversarial_images"] = self.adversarial_images
        return arrays

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict following the schema (images left out)."""
        out: dict[str, Any] = {"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "adversarial_images":
                continue
            if f.name == "outcomes":
                value = [vars(outcome) for outcome in value]
            elif f.name == "checks":
                value = [vars(check) for check in value]
            elif f.name == "examples":
                value = None if value is None else value.to_dict()
            out[f.name] = to_jsonable(value)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict` (strict JSON: no NaN)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> RobustnessReport:
        """A report from :meth:`to_dict` output; validated against the schema first."""
        validate_report(document)
        values = {f.name: document[f.name] for f in fields(cls) if f.name in document}
        values["bounds"] = tuple(values["bounds"])
        values["outcomes"] = [AttackOutcome(**outcome) for outcome in values["outcomes"]]
        values["checks"] = [CheckResult(**check) for check in values["checks"]]
        if values.get("examples") is not None:
            values["examples"] = ExampleRecords.from_dict(values["examples"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> RobustnessReport:
        """A report from :meth:`to_json` text."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"Not a JSON robustness report: {error}.") from error
        return cls.from_dict(document)
