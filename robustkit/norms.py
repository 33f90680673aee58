"""Threat models: the Linf and L2 balls of radius ``eps`` around an image, in pixel units.

Each norm gives exact projection onto its ball, a random start drawn uniformly from the ball,
the steepest-ascent step direction and snapping of a perturbation onto an n-level pixel grid.
All functions take perturbations ``delta`` of shape [N, ...] and work per example. The radius is
``eps`` given at construction, or a (tensor) ``eps`` argument, so one compiled attack serves every
radius.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import tensorflow as tf

from robustkit import seeding
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

    def radius(self, eps: float | tf.Tensor | None) -> float | tf.Tensor:
        """``eps`` if given, else the ball's own radius."""
        return self.eps if eps is None else eps

    def project(self, delta: tf.Tensor, eps: float | tf.Tensor | None = None) -> tf.Tensor:
        """The closest point of the ball to each delta [N, ...]."""
        raise NotImplementedError

    def random_start(
        self,
        shape: tf.TensorShape | tf.Tensor,
        seed: tf.Tensor,
        eps: float | tf.Tensor | None = None,
    ) -> tf.Tensor:
        """A delta of ``shape`` [N, ...] drawn uniformly from the ball. ``seed`` is an int32 [2]
        seed or per-example keys [N, 2] (:mod:`robustkit.seeding`): row i depends on its key
        alone."""
        shape = tf.convert_to_tensor(shape, tf.int32)
        keys = seeding.as_keys(seed, shape[0])
        return self._uniform_in_ball(keys, shape[1:], self.radius(eps))

    def _uniform_in_ball(
        self, keys: tf.Tensor, example_shape: tf.Tensor, eps: float | tf.Tensor
    ) -> tf.Tensor:
        """[N, *example_shape] uniform in the ball of radius eps, row i drawn from keys[i]."""
        raise NotImplementedError

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        """The unit-norm direction of steepest ascent for ``gradient`` [N, ...]."""
        raise NotImplementedError

    def snap_to_grid(
        self, delta: tf.Tensor, spacing: float | tf.Tensor, eps: float | tf.Tensor | None = None
    ) -> tf.Tensor:
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

    def project(self, delta: tf.Tensor, eps: float | tf.Tensor | None = None) -> tf.Tensor:
        eps = self.radius(eps)
        return tf.clip_by_value(delta, -eps, eps)

    def _uniform_in_ball(
        self, keys: tf.Tensor, example_shape: tf.Tensor, eps: float | tf.Tensor
    ) -> tf.Tensor:
        return seeding.uniform(keys, example_shape, -1.0, 1.0) * eps

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        return tf.sign(gradient)

    def snap_to_grid(
        self, delta: tf.Tensor, spacing: float | tf.Tensor, eps: float | tf.Tensor | None = None
    ) -> tf.Tensor:
        limit = tf.floor(self.radius(eps) / spacing + 1e-6)
        return tf.clip_by_value(tf.round(delta / spacing), -limit, limit) * spacing


class L2(Norm):
    """L2 ball: the perturbation's Euclidean length is at most eps."""

    name = "l2"

    def distance(self, delta: tf.Tensor) -> tf.Tensor:
        return l2_distance(delta)

    def project(self, delta: tf.Tensor, eps: float | tf.Tensor | None = None) -> tf.Tensor:
        norms = l2_distance(delta)
        factor = tf.minimum(1.0, self.radius(eps) / tf.maximum(norms, _TINY))
        return delta * _broadcast(factor, delta)

    def _uniform_in_ball(
        self, keys: tf.Tensor, example_shape: tf.Tensor, eps: float | tf.Tensor
    ) -> tf.Tensor:
        direction = self.step_direction(seeding.normal(seeding.fold_in(keys, 1), example_shape))
        dimension = tf.cast(tf.reduce_prod(example_shape), tf.float32)
        uniform = seeding.uniform(seeding.fold_in(keys, 2), [])
        radius = eps * uniform ** (1.0 / dimension)  # uniform in volume
        return direction * _broadcast(radius, direction)

    def step_direction(self, gradient: tf.Tensor) -> tf.Tensor:
        norms = l2_distance(gradient)
        return gradient / _broadcast(tf.maximum(norms, _TINY), gradient)

    def snap_to_grid(
        self, delta: tf.Tensor, spacing: float | tf.Tensor, eps: float | tf.Tensor | None = None
    ) -> tf.Tensor:
        eps = self.radius(eps)
        delta = self.project(delta, eps)
        rounded = tf.round(delta / spacing) * spacing
        # Where rounding left the ball, truncate towards zero instead: no |coordinate| grows, so
        # the result stays inside the ball and on the grid.
        truncated = tf.math.sign(delta) * tf.floor(tf.abs(delta) / spacing + 1e-6) * spacing
        inside = _broadcast(l2_distance(rounded) <= eps, delta)
        return tf.where(inside, rounded, truncated)


NORMS: dict[str, type[Norm]] = {"linf": Linf, "l2": L2}

BALL_ULPS = 4  # float32 units in the last place allowed per coordinate of a perturbation


def ball_slack(norm_name: str, eps: float, bounds: tuple[float, float], dimension: int) -> float:
    """How far (pixel units) a float32 point may lie outside the eps-ball and still count as
    inside: a few float32 ulps at the bounds' scale per coordinate (summed in quadrature for
    L2), plus a few ulps of eps itself. For bounds (0, 255) a coordinate near 255 rounds to
    steps of 1.5e-5, so an absolute tolerance would reject valid points."""
    scale = max(abs(float(bounds[0])), abs(float(bounds[1])), float(bounds[1] - bounds[0]))
    per_coordinate = BALL_ULPS * float(np.spacing(np.float32(scale)))
    spread = per_coordinate * (math.sqrt(dimension) if norm_name == "l2" else 1.0)
    return spread + BALL_ULPS * float(np.spacing(np.float32(max(float(eps), 1e-30))))


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
