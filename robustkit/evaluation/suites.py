"""Attack suites: which attacks the evaluator runs, with which budgets, rebuilt for each eps.

A :class:`SuiteAttack` holds an attack class and its eps-independent options; step sizes are
kept relative to eps (``rel_step_size``) so that one suite serves every radius.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustkit.attacks import FGSM, PGD, Square
from robustkit.errors import InputError
from robustkit.norms import Norm

SUITES = ("quick", "standard")
BUDGET_KEYS = ("steps", "queries", "restarts")  # options scaled by ``budget_factor``
_NOT_OPTIONS = ("attack", "norm", "eps", "step_size")  # config keys that are not options


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite, rebuilt for each eps.

    Attributes:
        name: label in the report, unique within a suite (e.g. ``"pgd-ce"``).
        factory: an attack class (PGD, FGSM, Square) or any callable ``(norm, **options)``
            returning an object with ``run(classifier, x, labels, seed, targeted=...)`` (giving
            :class:`~robustkit.attacks.AttackTensors`) and a ``config`` dict.
        options: keyword arguments of ``factory``; give step sizes as ``rel_step_size`` (a
            fraction of eps) so they scale with eps.
        top_k_targets: 0 for an untargeted attack; k > 0 runs it targeted at each of the k
            classes the model finds most likely after the true one, in turn.
    """

    name: str
    factory: Callable[..., Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    top_k_targets: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise InputError("A suite attack needs a non-empty name.")
        if int(self.top_k_targets) < 0:
            raise InputError(f"top_k_targets must be >= 0, got {self.top_k_targets!r}.")

    @property
    def gradient_free(self) -> bool:
        """True when the attack uses logits only (e.g. Square)."""
        return bool(getattr(self.factory, "gradient_free", False))

    def build(self, norm: Norm, budget_factor: int = 1) -> Any:
        """The attack for the ball ``norm``, with steps, queries and restarts times
        ``budget_factor`` (step sizes unchanged, so a larger budget searches further)."""
        options = dict(self.options)
        for key in BUDGET_KEYS:
            if key in options:
                options[key] = int(options[key]) * int(budget_factor)
        if self.factory is FGSM and "rel_step_size" in options:
            options["step_size"] = float(options.pop("rel_step_size")) * norm.eps
        return self.factory(norm, **options)

    def describe(self) -> dict[str, Any]:
        """JSON-able description: name, kind, targets and options (callables by name)."""
        return {
            "name": self.name,
            "attack": getattr(self.factory, "__name__", str(self.factory)),
            "gradient_free": self.gradient_free,
            "top_k_targets": int(self.top_k_targets),
            "options": {
                key: getattr(value, "__name__", value) if callable(value) else value
                for key, value in self.options.items()
            },
        }

    @classmethod
    def from_attack(
        cls, attack: Any, name: str | None = None, top_k_targets: int = 0
    ) -> SuiteAttack:
        """A suite entry equivalent to a configured PGD, FGSM or Square instance."""
        if not isinstance(attack, PGD):
            raise InputError(
                f"Cannot rebuild {type(attack).__name__} for other radii; wrap it as "
                "SuiteAttack(name, factory, options) with a factory taking (norm, **options)."
            )
        config = attack.config
        accepted = inspect.signature(type(attack)).parameters
        options = {
            key: value
            for key, value in config.items()
            if key in accepted and key not in _NOT_OPTIONS
        }
        options["loss"] = attack.loss  # the callable itself, not its name
        if "step_size" in config:
            eps = attack.norm.eps
            options["rel_step_size"] = config["step_size"] / eps if eps > 0 else 0.0
        return cls(name or default_name(attack), type(attack), options, top_k_targets)


def default_name(attack: Any) -> str:
    """A short label: ``fgsm``, ``square`` or ``pgd-<loss>``."""
    kind = type(attack).__name__.lower()
    if kind == "pgd":
        return f"pgd-{getattr(attack.loss, '__name__', attack.loss)}"
    return kind


def full_budget(config: Mapping[str, Any]) -> int:
    """Evaluations one example costs per target when the attack never stops early: queries or
    gradient steps times restarts, plus the steps on the pixel grid when quantized."""
    restarts = int(config.get("restarts", 1))
    if "queries" in config:
        return int(config["queries"]) * restarts
    return int(config.get("steps", 1)) * restarts + int(config.get("grid_steps") or 0)


def standard_suite() -> list[SuiteAttack]:
    """PGD-CE with restarts, PGD-margin, targeted PGD at the top 3 other classes, Square."""
    return [
        SuiteAttack("pgd-ce", PGD, {"steps": 100, "rel_step_size": 0.025, "restarts": 3}),
        SuiteAttack("pgd-margin", PGD, {"steps": 100, "rel_step_size": 0.025, "loss": "margin"}),
        SuiteAttack(
            "pgd-targeted",
            PGD,
            {"steps": 100, "rel_step_size": 0.025, "loss": "margin"},
            top_k_targets=3,
        ),
        SuiteAttack("square", Square, {"queries": 1000, "p_init": 0.8}),
    ]


def quick_suite() -> list[SuiteAttack]:
    """A cheap suite for iteration: 20-step PGD-CE and PGD-margin, 200-query Square."""
    return [
        SuiteAttack("pgd-ce", PGD, {"steps": 20, "rel_step_size": 0.125}),
        SuiteAttack("pgd-margin", PGD, {"steps": 20, "rel_step_size": 0.125, "loss": "margin"}),
        SuiteAttack("square", Square, {"queries": 200, "p_init": 0.8}),
    ]


def resolve_suite(suite: str | Sequence[Any]) -> tuple[str, list[SuiteAttack]]:
    """(name, attacks) for "quick", "standard" or a list of SuiteAttack / attack instances.

    Gradient-free attacks move to the end (order otherwise kept), so that in the cascade they
    see exactly the examples every gradient attack failed on.
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise InputError(f"Unknown suite {suite!r}; choose one of {SUITES} or pass attacks.")
        name, attacks = suite, (standard_suite() if suite == "standard" else quick_suite())
    else:
        name = "custom"
        attacks = [a if isinstance(a, SuiteAttack) else SuiteAttack.from_attack(a) for a in suite]
    if not attacks:
        raise InputError("The suite holds no attacks.")
    names = [attack.name for attack in attacks]
    if len(set(names)) != len(names):
        raise InputError(f"Suite attack names must be unique, got {names}; pass name=... .")
    ordered = [a for a in attacks if not a.gradient_free] + [a for a in attacks if a.gradient_free]
    return name, ordered
