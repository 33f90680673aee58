"""Per-variable transforms that look at the weights: adaptive gradient clipping and per-group rates.

Both are stateless: what they do is a function of the gradients, the weights before the step and
the variables' paths.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.optimizers.transforms import (
    GradientTransform,
    UpdateScale,
    non_negative,
    positive,
    variable_name,
)

PATTERN_SYNTAXES = ("fnmatch", "regex")


def unitwise_norm(x: tf.Tensor) -> tf.Tensor:
    """L2 norms of the units of ``x``, broadcast to its shape (float32 for float32 ``x``).

    The NFNets convention (Brock et al. 2021, and their reference code): a tensor with at most
    one axis longer than 1 (bias, scalar, ``[1, n]`` kernel) is one unit, its whole norm; a
    kernel of rank >= 2 has one unit per output channel, the norm over all axes but the last
    (Keras kernels are ``[in, out]`` and ``[h, w, in, out]``).
    """
    if sum(1 for size in x.shape if size != 1) <= 1:
        norm = tf.sqrt(tf.reduce_sum(tf.square(x)))
    else:
        norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=list(range(x.shape.rank - 1))))
    return tf.broadcast_to(norm, x.shape)


@keras.saving.register_keras_serializable(package="robustkit")
class AdaptiveGradClip(GradientTransform):
    """Adaptive gradient clipping, unit-wise (AGC; Brock et al. 2021, "High-performance
    large-scale image recognition without normalization").

    For each unit i (see :func:`unitwise_norm`) of gradient G and weight W::

        G_i <- G_i                                  if ||G_i|| <  clipping * max(||W_i||, eps)
        G_i <- G_i * clipping * max(||W_i||, eps) / max(||G_i||, 1e-6)   otherwise

    so no unit's gradient is larger than ``clipping`` times its weight norm (weights near zero,
    e.g. zero-initialised biases, are treated as norm ``eps``). The paper uses clipping 0.01 to
    0.16 (smaller for larger batches) and leaves the final classifier layer unclipped.

    Args:
        clipping: λ, the largest ratio of unit gradient norm to unit weight norm (> 0).
        eps: floor of the weight norm (> 0; the paper's 1e-3).
    """

    clips = True

    def __init__(self, clipping: float, eps: float = 1e-3) -> None:
        self.clipping = positive("clipping", clipping)
        self.eps = positive("eps", eps)

    def update(self, gradients, state, variables, step, seed):
        clipped = []
        for gradient, variable in zip(gradients, variables, strict=True):
            weights = tf.cast(tf.convert_to_tensor(variable), gradient.dtype)
            limit = self.clipping * tf.maximum(unitwise_norm(weights), self.eps)
            norm = unitwise_norm(gradient)
            scaled = gradient * (limit / tf.maximum(norm, 1e-6))
            clipped.append(tf.where(norm < limit, gradient, scaled))
        return clipped, state

    def get_config(self):
        return {"clipping": self.clipping, "eps": self.eps}


@keras.saving.register_keras_serializable(package="robustkit")
class ScaleByPattern(GradientTransform):
    """Per-group learning-rate multipliers, the groups given by patterns on variable paths.

    Each variable takes the multiplier of the first pattern its path matches (``"dense/kernel"``;
    a Sequential model's paths start with its name, ``"sequential/dense/kernel"``); a variable
    that matches none keeps 1. The multiplier scales the inner optimizer's update of the
    variable after the step (``w <- w_before + m * (w_after - w_before)``), so it is a rate
    multiplier for SGD, Adam, AdamW (weight decay included) alike; scaling the gradient instead
    would do nothing to Adam, which is invariant to the gradient's scale. Multiplier 0 freezes
    the group bit for bit, and its gradient is also zeroed (so clipping ignores it); the
    gradients of other groups pass unchanged, noise added later included (and scaled with the
    update). A variable with a multiplier other than 1 costs a copy of it per step.

    Args:
        groups: ``[(pattern, multiplier), ...]`` in order, or a dict (its order), multipliers
            finite and >= 0, e.g. ``[("*base*", 0.1)]`` for a pretrained base at a tenth of the
            rate.
        syntax: "fnmatch" (shell wildcards ``*``, ``?``, ``[...]``, matched against the whole
            path, case-sensitive) or "regex" (Python ``re.search`` anywhere in the path; anchor
            with ``^`` and ``$`` to match it whole).
    """

    acts_after_step = True

    def __init__(
        self,
        groups: Sequence[tuple[str, float]] | Mapping[str, float],
        syntax: str = "fnmatch",
    ) -> None:
        if syntax not in PATTERN_SYNTAXES:
            raise InputError(f"syntax must be one of {PATTERN_SYNTAXES}, got {syntax!r}.")
        pairs = list(groups.items()) if isinstance(groups, Mapping) else list(groups)
        self.groups: list[tuple[str, float]] = []
        for pair in pairs:
            if not (isinstance(pair, Sequence) and len(pair) == 2 and isinstance(pair[0], str)):
                raise InputError(
                    f"groups must be (pattern, multiplier) pairs with a string pattern, got "
                    f"{pair!r}."
                )
            pattern, multiplier = pair
            if syntax == "regex":
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise InputError(f"Bad regular expression {pattern!r}: {error}.") from error
            self.groups.append((pattern, non_negative(f"multiplier of {pattern!r}", multiplier)))
        self.syntax = syntax

    def multiplier(self, path: str) -> float:
        """The multiplier of the variable at ``path``: its first matching group's, else 1."""
        for pattern, multiplier in self.groups:
            if self.syntax == "regex":
                matched = re.search(pattern, path) is not None
            else:
                matched = fnmatch.fnmatchcase(path, pattern)
            if matched:
                return multiplier
        return 1.0

    def multipliers(self, variables: Sequence[Any]) -> dict[str, float]:
        """Each variable's path and its multiplier, to check the patterns on a model."""
        return {variable_name(v): self.multiplier(variable_name(v)) for v in variables}

    def update(self, gradients, state, variables, step, seed):
        multipliers = [self.multiplier(variable_name(v)) for v in variables]
        return [
            tf.zeros_like(g) if m == 0 else g for g, m in zip(gradients, multipliers, strict=True)
        ], state

    def update_scale(self, variables):
        scales = []
        for variable in variables:
            multiplier = self.multiplier(variable_name(variable))
            scales.append(None if multiplier == 1 else UpdateScale(multiplier=multiplier))
        return scales

    def get_config(self):
        return {"groups": [[p, m] for p, m in self.groups], "syntax": self.syntax}


def adaptive_grad_clip(clipping: float, eps: float = 1e-3) -> AdaptiveGradClip:
    """Clip each unit's gradient to ``clipping`` times its weight norm (AGC, Brock et al. 2021)."""
    return AdaptiveGradClip(clipping, eps)


def scale_by_pattern(
    groups: Sequence[tuple[str, float]] | Mapping[str, float], syntax: str = "fnmatch"
) -> ScaleByPattern:
    """Multiply the update of each variable group (first matching path pattern) by its factor."""
    return ScaleByPattern(groups, syntax)
