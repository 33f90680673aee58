"""Input-gradient attacks: FGSM and PGD, returning :class:`AttackResult`."""

from robustkit.attacks.pgd import FGSM, PGD, AttackTensors
from robustkit.attacks.result import AttackResult

__all__ = ["FGSM", "PGD", "AttackResult", "AttackTensors"]
