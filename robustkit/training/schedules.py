"""Schedules for adversarial training: an eps ramp-up per epoch and a piecewise-linear
(cyclic / one-cycle) learning rate per optimizer step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.errors import InputError

EpsSchedule = Callable[[int], float]


def eps_ramp(eps: float, epochs: int, start: float = 0.0) -> EpsSchedule:
    """Radius per epoch rising linearly from ``start`` to ``eps`` over ``epochs`` epochs, then
    constant: epoch e (0-based) gets ``start + (eps - start) * min(1, (e + 1) / epochs)``.

    The radius is an argument of the one compiled training step, so a ramp never retraces.
    """
    if int(epochs) < 1:
        raise InputError(f"ramp epochs must be >= 1, got {epochs!r}.")
    if not 0 <= float(start) <= float(eps):
        raise InputError(f"need 0 <= start <= eps, got start={start!r}, eps={eps!r}.")

    def schedule(epoch: int) -> float:
        fraction = min(1.0, (int(epoch) + 1) / int(epochs))
        return float(start) + (float(eps) - float(start)) * fraction

    return schedule


@keras.saving.register_keras_serializable(package="robustkit")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate interpolated linearly between ``(step, value)`` points, constant outside.

    ``PiecewiseLinear([0, 400, 800], [0.0, 1e-3, 0.0])`` is a triangular (one-cycle) schedule
    over 800 optimizer steps; more points give cyclic or step-like shapes.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        if len(self.boundaries) != len(self.values) or not self.boundaries:
            raise InputError("boundaries and values must be non-empty and of equal length.")
        if np.any(np.diff(self.boundaries) <= 0):
            raise InputError(f"boundaries must increase strictly, got {self.boundaries}.")

    def __call__(self, step: Any) -> tf.Tensor:
        values = tf.constant(self.values, tf.float32)
        if len(self.values) == 1:
            return values[0]
        step = tf.cast(step, tf.float32)
        boundaries = tf.constant(self.boundaries, tf.float32)
        after = tf.searchsorted(boundaries, tf.reshape(step, [1]), side="right")[0]
        right = tf.clip_by_value(after, 1, len(self.values) - 1)
        left = right - 1
        span = boundaries[right] - boundaries[left]
        fraction = tf.clip_by_value((step - boundaries[left]) / span, 0.0, 1.0)
        return values[left] + fraction * (values[right] - values[left])

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries, "values": self.values}
