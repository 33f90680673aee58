"""`AttackResult`: what an attack hands back, as NumPy arrays that convert to JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from robustkit.values import as_json, as_numpy

ArrayOrTensor = TypeVar("ArrayOrTensor")


def is_robust(clean_correct: ArrayOrTensor, broken: ArrayOrTensor) -> ArrayOrTensor:
    """The one robust-accuracy rule: bool [N], clean-correct and no adversarial found.

    Works on NumPy arrays and on bool tensors inside a compiled graph alike.
    """
    return clean_correct & ~broken


@dataclass
class AttackResult:
    """Per-example outcome of an attack on N images.

    Attributes:
        x_adv: adversarial images [N, H, W, C], float32, pixel space (on the grid if quantized).
        success: bool [N]; untargeted: misclassified, targeted: classified as the target.
        labels: int [N], the true labels given, or the model's clean predictions when none were.
        target: int [N] target classes of a targeted attack, else None.
        clean_pred, adv_pred: int [N] predicted classes before and after the attack.
        clean_confidence, adv_confidence: float [N] softmax probability of those predictions.
        linf, l2: float [N] distance between x_adv and x, in pixel units of the bounds.
        steps: int [N] gradient evaluations spent on each example.
        gradient_steps: total gradient evaluations (sum of ``steps``).
        success_unquantized: bool [N] success before snapping to the pixel grid, when quantized.
        labels_from_model: True when ``labels`` are the model's own clean predictions.
        config: every hyperparameter of the attack, JSON-able.
    """

    x_adv: np.ndarray
    success: np.ndarray
    labels: np.ndarray
    target: np.ndarray | None
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    clean_confidence: np.ndarray
    adv_confidence: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    steps: np.ndarray
    success_unquantized: np.ndarray | None = None
    labels_from_model: bool = False
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def gradient_steps(self) -> int:
        """Total gradient evaluations over all examples."""
        return int(self.steps.sum())

    @property
    def clean_accuracy(self) -> float:
        """Share of examples whose clean prediction equals the label."""
        return float(np.mean(self.clean_pred == self.labels)) if len(self.labels) else 0.0

    @property
    def robust_accuracy(self) -> float:
        """Share of examples robust to the attack (:func:`is_robust`): clean-correct and
        still correctly classified after it."""
        if not len(self.labels):
            return 0.0
        robust = is_robust(self.clean_pred == self.labels, self.adv_pred != self.labels)
        return float(np.mean(robust))

    @property
    def success_rate(self) -> float:
        """Share of examples on which the attack succeeded."""
        return float(np.mean(self.success)) if len(self.success) else 0.0

    def to_numpy(self) -> dict[str, Any]:
        """All fields as a dict of NumPy arrays (and the config)."""
        return as_numpy(self)

    def to_dict(self, include_images: bool = False) -> dict[str, Any]:
        """JSON-able dict; images are left out unless asked for."""
        out = as_json(self, leave_out=None if include_images else "x_adv")
        out["gradient_steps"] = self.gradient_steps
        out["summary"] = {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "success_rate": self.success_rate,
        }
        return out

    def to_json(self, include_images: bool = False) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(include_images))

    @classmethod
    def concatenate(cls, parts: list[AttackResult]) -> AttackResult:
        """Join per-batch results in order."""
        first = parts[0]
        joined: dict[str, Any] = {}
        for f in fields(cls):
            values = [getattr(part, f.name) for part in parts]
            if isinstance(values[0], np.ndarray):
                joined[f.name] = np.concatenate(values)
            else:
                joined[f.name] = getattr(first, f.name)
        return cls(**joined)
