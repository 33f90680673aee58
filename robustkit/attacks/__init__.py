"""Attacks returning :class:`AttackResult`: input-gradient FGSM and PGD, gradient-free Square."""

from robustkit.attacks.pgd import FGSM, PGD, AttackTensors
from robustkit.attacks.result import AttackResult
from robustkit.attacks.square import Square

__all__ = ["FGSM", "PGD", "AttackResult", "AttackTensors", "Square"]
