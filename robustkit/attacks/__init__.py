"""Attacks on one core (:mod:`robustkit.attacks.base`), each returning :class:`AttackResult`:
input-gradient FGSM, PGD, APGD, APGD-T and FAB-T, gradient-free Square."""

from robustkit.attacks.apgd import APGD, APGDT
from robustkit.attacks.base import Attack
from robustkit.attacks.fab import FABT
from robustkit.attacks.pgd import FGSM, PGD
from robustkit.attacks.result import AttackResult, is_robust
from robustkit.attacks.search import AttackTensors, SearchState
from robustkit.attacks.square import Square

__all__ = [
    "APGD",
    "APGDT",
    "FABT",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "AttackTensors",
    "SearchState",
    "Square",
    "is_robust",
]
