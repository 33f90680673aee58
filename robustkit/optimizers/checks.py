"""Checks of a ``Transformed`` optimizer's set-up and of what its transforms return."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.optimizers.transforms import GradientTransform

_INNER_CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")


def check_inner(inner: Any, wrapper: type) -> None:
    """Refuse an inner optimizer that is not a Keras 3 one, is a wrapper already, or clips."""
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise InputError(
            f"inner must be a Keras 3 optimizer (keras.optimizers.Adam(...), ...), got {inner!r}."
        )
    if isinstance(inner, wrapper):
        raise InputError("inner is already a Transformed optimizer; put all transforms in one.")
    clipping = {arg: getattr(inner, arg) for arg in _INNER_CLIPPING if getattr(inner, arg)}
    if clipping:
        setting = ", ".join(f"{k}={v}" for k, v in clipping.items())
        raise InputError(
            f"The inner optimizer clips its gradients ({setting}). It would clip after the "
            "transforms, i.e. after the noise, clipping the noise away and breaking the order "
            "clip -> noise. Remove it from the inner optimizer and use clip_by_norm / "
            "clip_by_global_norm / clip_by_value in the transforms instead."
        )


def check_transforms(transforms: list[Any], inner: keras.optimizers.Optimizer) -> None:
    """Refuse what is not a transform of the init/update kind, and EMA with after-step ones."""
    for transform in transforms:
        if not isinstance(transform, GradientTransform):
            raise InputError(
                f"transforms must be GradientTransform instances (clip_by_norm(1.0), ...), "
                f"got {transform!r}."
            )
        if type(transform).update is GradientTransform.update:
            raise InputError(
                f"{type(transform).__name__} does not implement update(gradients, state, "
                "variables, step, seed) -> (gradients, state). Transforms no longer take a "
                "StepContext: keep state in init(variables) and return it from update."
            )
    acting_after = [t for t in transforms if t.acts_after_step]
    if acting_after and inner.use_ema:
        raise InputError(
            f"{acting_after} act on the inner optimizer's update after its step, but its EMA "
            "(use_ema=True) averages the weights inside the step, before them, so the averages "
            "would not follow. Drop use_ema or these transforms."
        )


def check_update_output(
    transform: GradientTransform,
    grads: list[tf.Tensor],
    variables: list[Any],
    state: Any,
    slot: list[Any],
) -> None:
    """At trace time: one gradient per variable, and a state like the one ``init`` gave."""
    if len(grads) != len(variables):
        raise InputError(
            f"{transform!r} returned {len(grads)} gradients for {len(variables)} variables."
        )
    leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(state)]
    got = [(tuple(x.shape), x.dtype.name) for x in leaves]
    expected = [(tuple(v.shape), tf.as_dtype(v.dtype).name) for v in slot]
    if got != expected:
        raise InputError(
            f"{transform!r}.update returned a state unlike the one its init gave: (shape, dtype) "
            f"{got} instead of {expected}."
        )
