"""Threat models: the Linf and L2 balls of radius ``eps`` around an image, in pixel units.

Each norm gives exact projection onto its ball, a random start drawn uniformly from the ball,
the steepest-ascent step direction and snapping of a perturbation onto an n-level pixel grid.
All functions take perturbations ``delta`` of shape [N, ...] and work per example.
"""

from __future__ import annotations

import math
from typing import ClassVar

import tensorflow as tf

from robustkit.errors import InputError

_TINY = 1e-12  # guards divisions by a zero norm


def _per_example(values: tf.Tensor) -> tf.Tensor:
    """Reshape to [N, -1]."""
    return tf.reshape(values, (tf.shape(values)[0], -1))


def _broadcast(per_example: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reshape [N] values to broadcast against ``like`` [N, ...]."""
    ones = tf.ones((tf.rank(like) - 1,), tf.int32)
    return tf.reshape(per_example, tf.concat([tf.shape(per_example), ones], axis=0))


def linf_distance(delta: tf.Tensor) -> tf.Tensor:
    """Per-example Linf norm [N] of delta [N, ...]."""
    return tf.reduce_max(tf.abs(_per_example(delta)), axis=1)


def l2_distance(delta: tf.Tensor) -> tf.Tensor:
    """Per-example L2 norm [N] of delta [N, ...]."""
    return tf.norm(_per_example(delta), axis=1)


class Norm:
    """A ball of radius ``eps`` (pixel units) in some norm."""

    name: ClassVar[str]

    def __init__(self, eps: float) -> None:
        if not math.isfinite(float(eps)) or float(eps) < 0:
            raise InputError(f"eps must be a finite number >= 0, got {eps!r}.")
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps:g})"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        """Per-example norm [N] of delta [N, ...]."""
        raise NotImplementedError

    def project(self, delta: tf.Tensor) -> tf.Tensor:
        """The closest point of the ball to each delta [N, ...]."""
        raise NotImplementedError

    def random_start(self, shape: tf.TensorShape | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """A delta of ``shape`` drawn uniformly from the ball; ``seed`` is a stateless [2] seed."""
        raise NotImplementedError

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        """The unit-norm direction of steepest ascent for ``gradient`` [N, ...]."""
        raise NotImplementedError

    def snap_to_grid(self, delta: tf.Tensor, spacing: float) -> tf.Tensor:
        """A grid point (multiples of ``spacing``) inside the ball, near delta.

        For images on the grid, x + snapped delta is again on the grid and within eps.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, float | str]:
        """JSON-able description."""
        return {"norm": self.name, "eps": self.eps}


class Linf(Norm):
    """Linf ball: every pixel moves by at most eps."""

    name = "linf"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return linf_distance(delta)

    def project(self, delta: tf.Tensor) -> tf.Tensor:
        return tf.clip_by_value(delta, -self.eps, self.eps)

    def random_start(self, shape: tf.TensorShape | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seed, -self.eps, self.eps)

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        return tf.sign(gradient)

    def snap_to_grid(self, delta: tf.Tensor, spacing: float) -> tf.Tensor:
        limit = math.floor(self.eps / spacing + 1e-6)
        return tf.clip_by_value(tf.round(delta / spacing), -limit, limit) * spacing


class L2(Norm):
    """L2 ball: the perturbation's Euclidean length is at most eps."""

    name = "l2"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return l2_distance(delta)

    def project(self, delta: tf.Tensor) -> tf.Tensor:
        norms = l2_distance(delta)
        factor = tf.minimum(1.0, self.eps / tf.maximum(norms, _TINY))
        return delta * _broadcast(factor, delta)

    def random_start(self, shape: tf.TensorShape | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        seeds = tf.random.experimental.stateless_split(seed, 2)
        direction = self.step_direction(tf.random.stateless_normal(shape, seeds[0]))
        dimension = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
        uniform = tf.random.stateless_uniform(shape[:1], seeds[1])
        radius = self.eps * uniform ** (1.0 / dimension)  # uniform in volume
        return direction * _broadcast(radius, direction)

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        norms = l2_distance(gradient)
        return gradient / _broadcast(tf.maximum(norms, _TINY), gradient)

    def snap_to_grid(self, delta: tf.Tensor, spacing: float) -> tf.Tensor:
        delta = self.project(delta)
        rounded = tf.round(delta / spacing) * spacing
        # Where rounding left the ball, truncate towards zero instead: no |coordinate| grows, so
        # the result stays inside the ball and on the grid.
        truncated = tf.math.sign(delta) * tf.floor(tf.abs(delta) / spacing + 1e-6) * spacing
        inside = _broadcast(l2_distance(rounded) <= self.eps, delta)
        return tf.where(inside, rounded, truncated)


NORMS: dict[str, type[Norm]] = {"linf": Linf, "l2": L2}


def make_norm(norm: str | Norm, eps: float | None = None) -> Norm:
    """A Norm from a name ("linf", "l2") and eps, or the given Norm itself."""
    if isinstance(norm, Norm):
        return norm
    key = str(norm).lower()
    if key not in NORMS:
        raise InputError(f"Unknown norm {norm!r}; choose one of {sorted(NORMS)}.")
    if eps is None:
        raise InputError(f"eps is required for the {key} norm.")
    return NORMS[key](eps)
