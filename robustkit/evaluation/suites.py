"""Attack suites: which attacks the evaluator runs, with which budgets.

A :class:`SuiteAttack` holds an attack class and its eps-independent options; the attack is
built once and every radius is a tensor argument of its compiled run (one trace per attack).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustkit.attacks import APGD, APGDT, FABT, PGD, Attack, Square
from robustkit.errors import InputError
from robustkit.norms import Norm

SUITES = ("quick", "standard", "plus")
BUDGET_KEYS = ("steps", "queries", "restarts")  # options scaled by ``budget_factor``
_NOT_OPTIONS = ("attack", "norm", "eps", "step_size", "seed")  # config keys that are not options


@dataclass(frozen=True)
class SuiteAttack:
    """One attack of a suite: its class and eps-independent options (built once; the radius is
    a tensor argument of every run).

    Attributes:
        name: label in the report, unique within a suite (e.g. ``"apgd-ce"``).
        factory: a robustkit attack class (APGD, APGDT, FABT, Square, PGD, FGSM) or any callable
            ``(norm, **options)`` returning a :class:`~robustkit.attacks.Attack`.
        options: keyword arguments of ``factory``; give PGD step sizes as ``rel_step_size`` (a
            fraction of eps) so they scale with eps.
        top_k_targets: 0 for an attack run once; k > 0 runs it targeted (class reached = success)
            at each of the k classes the model finds most likely after the true one, in turn.
            APGDT and FABT pick their own targets and are run with 0.
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

    def build(self, norm: Norm, budget_factor: int = 1, seed: int | None = None) -> Attack:
        """The attack in the ball ``norm`` (its eps is only the default radius), with steps,
        queries and restarts times ``budget_factor``, and ``seed`` when given."""
        options = dict(self.options)
        for key in BUDGET_KEYS:
            if key in options:
                options[key] = int(options[key]) * int(budget_factor)
        if seed is not None:
            options["seed"] = int(seed)
        attack = self.factory(norm, **options)
        if not isinstance(attack, Attack):
            raise InputError(
                f"Suite attack {self.name!r} built a {type(attack).__name__}; a factory must "
                "return a robustkit Attack (subclass robustkit.attacks.Attack)."
            )
        return attack

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
        """A suite entry equivalent to a configured robustkit attack instance."""
        if not isinstance(attack, Attack):
            raise InputError(
                f"Cannot run {type(attack).__name__} in a suite; pass a robustkit attack or "
                "SuiteAttack(name, factory, options) with a factory taking (norm, **options)."
            )
        config = attack.config
        accepted = inspect.signature(type(attack)).parameters
        options = {
            key: value
            for key, value in config.items()
            if key in accepted and key not in _NOT_OPTIONS and value is not None
        }
        if "loss" in options:
            options["loss"] = attack.loss  # the callable itself, not its name
        if isinstance(attack, PGD):
            options.pop("rel_step_size", None)
            eps = attack.norm.eps
            if attack.fixed_step_size is not None:
                options["rel_step_size"] = attack.fixed_step_size / eps if eps > 0 else 0.0
            else:
                options["rel_step_size"] = attack.rel_step_size
        return cls(name or default_name(attack), type(attack), options, top_k_targets)


def default_name(attack: Any) -> str:
    """A short label: ``fgsm``, ``square``, ``apgd-<loss>``, ``apgdt``, ``fabt``, ``pgd-<loss>``."""
    kind = type(attack).__name__.lower()
    if kind in ("pgd", "apgd"):
        return f"{kind}-{getattr(attack.loss, '__name__', attack.loss)}"
    return kind


def standard_suite() -> list[SuiteAttack]:
    """AutoAttack's standard version (Croce & Hein 2020): APGD-CE, APGD-T over 9 targets, FAB-T
    over 9 targets (100 steps each, one restart) and Square with 5,000 queries (p halving at
    fixed query counts, as AutoAttack builds it: ``resc_schedule=False``)."""
    return [
        SuiteAttack("apgd-ce", APGD, {"steps": 100, "loss": "ce"}),
        SuiteAttack("apgd-t", APGDT, {"steps": 100, "targets": 9}),
        SuiteAttack("fab-t", FABT, {"steps": 100, "targets": 9}),
        SuiteAttack("square", Square, {"queries": 5000, "p_init": 0.8, "rescale_schedule": False}),
    ]


def plus_suite() -> list[SuiteAttack]:
    """AutoAttack's plus version as far as robustkit has its attacks: APGD-CE and APGD-DLR with
    5 restarts, APGD-T and FAB-T over 9 targets, Square with 5,000 queries and 5 restarts."""
    return [
        SuiteAttack("apgd-ce", APGD, {"steps": 100, "loss": "ce", "restarts": 5}),
        SuiteAttack("apgd-dlr", APGD, {"steps": 100, "loss": "dlr", "restarts": 5}),
        SuiteAttack("apgd-t", APGDT, {"steps": 100, "targets": 9}),
        SuiteAttack("fab-t", FABT, {"steps": 100, "targets": 9}),
        SuiteAttack(
            "square",
            Square,
            {"queries": 5000, "p_init": 0.8, "restarts": 5, "rescale_schedule": False},
        ),
    ]


def quick_suite() -> list[SuiteAttack]:
    """A cheap suite for iteration: APGD-CE and APGD-T over the 3 likeliest other classes."""
    return [
        SuiteAttack("apgd-ce", APGD, {"steps": 100, "loss": "ce"}),
        SuiteAttack("apgd-t", APGDT, {"steps": 100, "targets": 3}),
    ]


_SUITE_BUILDERS = {"quick": quick_suite, "standard": standard_suite, "plus": plus_suite}


def resolve_suite(suite: str | Sequence[Any]) -> tuple[str, list[SuiteAttack]]:
    """(name, attacks) for "quick", "standard", "plus" or a list of SuiteAttack / attack instances.

    Gradient-free attacks move to the end (order otherwise kept), so that in the cascade they
    see exactly the examples every gradient attack failed on.
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise InputError(f"Unknown suite {suite!r}; choose one of {SUITES} or pass attacks.")
        name, attacks = suite, _SUITE_BUILDERS[suite]()
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
