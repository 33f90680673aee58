"""Adversarial training: PGD, fast (FGSM-RS), TRADES and mixed on a compiled custom loop."""

from robustkit.training.callbacks import ProgressLogger
from robustkit.training.guard import GuardDecision, OverfitGuard, RobustEarlyStopping
from robustkit.training.history import TrainingHistory
from robustkit.training.methods import METHODS
from robustkit.training.schedules import PiecewiseLinear, eps_ramp
from robustkit.training.trainer import AdversarialTrainer
from robustkit.training.validation import Validator, default_validation_attack

__all__ = [
    "METHODS",
    "AdversarialTrainer",
    "GuardDecision",
    "OverfitGuard",
    "PiecewiseLinear",
    "ProgressLogger",
    "RobustEarlyStopping",
    "TrainingHistory",
    "Validator",
    "default_validation_attack",
    "eps_ramp",
]
