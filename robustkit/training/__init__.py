"""Adversarial training: PGD, fast (FGSM-RS or N-FGSM), TRADES, mixed and MART on a compiled
custom loop, with GradAlign, AWP and weight averaging as options."""

from robustkit.training.callbacks import ProgressLogger
from robustkit.training.fast import NFGSM
from robustkit.training.guard import GuardDecision, OverfitGuard, RobustEarlyStopping
from robustkit.training.history import TrainingHistory
from robustkit.training.methods import METHODS
from robustkit.training.schedules import PiecewiseLinear, eps_ramp
from robustkit.training.trainer import AdversarialTrainer
from robustkit.training.validation import Validator, default_validation_attack

__all__ = [
    "METHODS",
    "NFGSM",
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
