"""Adversarial training: PGD, fast (FGSM-RS), TRADES and mixed on a compiled custom loop."""

from robustkit.training.callbacks import ProgressLogger
from robustkit.training.history import TrainingHistory
from robustkit.training.methods import METHODS
from robustkit.training.schedules import PiecewiseLinear, eps_ramp
from robustkit.training.trainer import AdversarialTrainer

__all__ = [
    "METHODS",
    "AdversarialTrainer",
    "PiecewiseLinear",
    "ProgressLogger",
    "TrainingHistory",
    "eps_ramp",
]
