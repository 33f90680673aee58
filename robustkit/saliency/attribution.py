"""`Attribution`: what every saliency method hands back, as NumPy arrays that convert to JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustkit.values import as_json, as_numpy


@dataclass
class Attribution:
    """Saliency maps of N images and what they explain.

    Attributes:
        maps: float32 [N, H, W, C] attribution per input pixel and channel, in units of the
            objective per unit of pixel value (gradients), or of the objective (IG,
            gradient × input); the CAM family and the perturbation methods (occlusion, RISE,
            KernelSHAP, LIME) give [N, H, W, 1].
        target: int64 [N] the class each map explains.
        predicted: int64 [N] the class the model predicts for each image.
        method: the method's name ("integrated_gradients", "smoothgrad", ...).
        options: every option the method ran with, JSON-able.
        score: float [N] the explained objective f(x) (e.g. the target's logit) at the image.
        baseline_score: float [N] f(x') at the baseline (integrated gradients, KernelSHAP,
            ScoreCAM).
        delta: float [N] completeness error ``sum(attributions) - (f(x) - f(x'))``
            (integrated gradients: tends to 0 as the number of steps grows; KernelSHAP: the
            sum over features, 0 up to rounding).
    """

    maps: np.ndarray
    target: np.ndarray
    predicted: np.ndarray
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    score: np.ndarray | None = None
    baseline_score: np.ndarray | None = None
    delta: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def to_numpy(self) -> dict[str, Any]:
        """All fields as a dict of NumPy arrays (and the method and options)."""
        return as_numpy(self)

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-able dict; the maps are left out unless asked for."""
        return as_json(self, leave_out=None if include_maps else "maps")

    def to_json(self, include_maps: bool = False) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(include_maps))
