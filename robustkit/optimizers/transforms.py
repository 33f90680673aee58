"""Gradient transforms with explicit state, and the stateless ones: clipping, noise, freezing.

A transform is a pair of functions in the manner of Optax's ``GradientTransformation``:

- ``init(variables) -> state``: the transform's initial state for these model variables, a nest
  (tuple, list or dict) of tensors, ``()`` when it keeps none. :class:`~robustkit.optimizers.
  Transformed` calls it once, in ``build``, and keeps each tensor in an optimizer variable, so
  the state is saved with the optimizer (``model.save``, ``tf.train.Checkpoint``).
- ``update(gradients, state, variables, step, seed) -> (gradients, state)``: one step. It gets
  the gradients (dense float tensors shaped like their variables, already summed over replicas),
  its state as it was after the previous step, the variables (values before this step), the
  step (int64 scalar, 0 at the first) and a stateless-RNG key (int64 [2], distinct per
  transform and per step, the same on every replica); it returns the new gradients and the new
  state, of the same structure, shapes and dtypes. Nothing else is shared between transforms.

Two facts are not gradients and are declared by pure methods that the wrapper calls: a transform
whose ``acts_after_step`` is true says in :meth:`GradientTransform.update_scale` how much of the
inner optimizer's update each variable keeps (freezing, per-group rates), computed from the
values before the step; a noise transform says its standard deviation in ``noise_stddev(step)``
(for the debug record).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError

# Message of the in-graph numerics check; TensorFlow raises it as InvalidArgumentError.
NON_FINITE_MESSAGE = "robustkit: NaN or Inf gradient for variable(s):"

State = Any  # a nest of tensors (tuple, list, dict); () for a transform without state


@dataclasses.dataclass(frozen=True)
class UpdateScale:
    """How much of the inner optimizer's update of one variable is kept after the step.

    Attributes:
        multiplier: the update is multiplied by this (a Python float >= 0): 1 keeps it, 0
            undoes it bit for bit (the variable keeps its value before the step).
        frozen: None, or a boolean tensor shaped like the variable: entries whose value before
            the step is put back bit for bit (undoing momentum and weight decay too).
    """

    multiplier: float = 1.0
    frozen: tf.Tensor | None = None


def variable_name(variable: Any) -> str:
    """The path of a Keras variable (``"dense/kernel"``), else its TensorFlow name."""
    return str(getattr(variable, "path", None) or variable.name)


def global_norm(tensors: list[tf.Tensor]) -> tf.Tensor:
    """L2 norm of all tensors taken together, float32 scalar."""
    return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float32))) for t in tensors]))


def zero_where(mask: tf.Tensor, gradient: tf.Tensor) -> tf.Tensor:
    """``gradient`` with the entries under ``mask`` set to exactly 0."""
    return tf.where(mask, tf.zeros_like(gradient), gradient)


def gaussian_like(tensors: list[tf.Tensor], key: tf.Tensor, stddev: tf.Tensor) -> list[tf.Tensor]:
    """I.i.d. N(0, stddev²) noise shaped and typed like each tensor, from stateless ``key``.

    One draw for all tensors (a single kernel instead of one per variable), split and reshaped
    (views, no copies).
    """
    sizes = [t.shape.num_elements() for t in tensors]
    noise = tf.random.stateless_normal([sum(sizes)], seed=key, stddev=stddev)
    pieces = tf.split(noise, sizes) if len(tensors) > 1 else [noise]
    out = []
    for t, piece in zip(tensors, pieces, strict=True):
        piece = tf.reshape(piece, t.shape)
        out.append(piece if t.dtype == tf.float32 else tf.cast(piece, t.dtype))
    return out


class GradientTransform:
    """One link of the chain: ``init`` and ``update`` (see the module docstring), a JSON config.

    Class attributes:
        clips: the transform bounds the gradients; the debug record takes the global norm after
            the last clipping transform as "clipped_grad_norm".
        acts_after_step: the transform implements :meth:`update_scale`.
    """

    clips = False
    acts_after_step = False

    def init(self, variables: list[Any]) -> State:
        """The initial state for ``variables`` (the optimizer's, in order); () by default."""
        return ()

    def update(
        self,
        gradients: list[tf.Tensor],
        state: State,
        variables: list[Any],
        step: tf.Tensor,
        seed: tf.Tensor,
    ) -> tuple[list[tf.Tensor], State]:
        """The transformed gradients and the new state (see the module docstring)."""
        raise NotImplementedError

    def update_scale(self, variables: list[Any]) -> list[UpdateScale | None]:
        """Per variable, how much of the inner optimizer's update is kept (None: all of it).

        Called before the step, on the values before it, only when ``acts_after_step``.
        """
        return [None] * len(variables)

    def noise_stddev(self, step: tf.Tensor) -> tf.Tensor | None:
        """Standard deviation of the noise added at ``step`` (float32 scalar); None: no noise."""
        return None

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GradientTransform:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def non_negative(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByValue(GradientTransform):
    """Clip every gradient entry to ``[-clip_value, clip_value]``."""

    clips = True

    def __init__(self, clip_value: float) -> None:
        self.clip_value = positive("clip_value", clip_value)

    def update(self, gradients, state, variables, step, seed):
        return [tf.clip_by_value(g, -self.clip_value, self.clip_value) for g in gradients], state

    def get_config(self):
        return {"clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByNorm(GradientTransform):
    """Scale each gradient tensor separately to L2 norm at most ``clip_norm``."""

    clips = True

    def __init__(self, clip_norm: float) -> None:
        self.clip_norm = positive("clip_norm", clip_norm)

    def update(self, gradients, state, variables, step, seed):
        return [tf.clip_by_norm(g, self.clip_norm) for g in gradients], state

    def get_config(self):
        return {"clip_norm": self.clip_norm}


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByGlobalNorm(GradientTransform):
    """Scale all gradients by one factor so that their joint L2 norm is at most ``clip_norm``.

    A non-finite global norm makes every gradient NaN (TensorFlow's rule), so that
    :class:`CheckNumerics` or the loss shows the problem instead of hiding it.
    """

    clips = True

    def __init__(self, clip_norm: float) -> None:
        self.clip_norm = positive("clip_norm", clip_norm)

    def update(self, gradients, state, variables, step, seed):
        clipped, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return clipped, state

    def get_config(self):
        return {"clip_norm": self.clip_norm}


class _GaussianNoiseBase(GradientTransform):
    """Adds i.i.d. N(0, stddev(t)²) to every gradient entry, drawn from the step's stateless key."""

    def noise_stddev(self, step: tf.Tensor) -> tf.Tensor:
        """Noise standard deviation (gradient units, float32 scalar) at 0-based ``step``."""
        raise NotImplementedError

    def update(self, gradients, state, variables, step, seed):
        noise = gaussian_like(gradients, seed, self.noise_stddev(step))
        return [g + n for g, n in zip(gradients, noise, strict=True)], state


@keras.saving.register_keras_serializable(package="robustkit")
class GaussianNoise(_GaussianNoiseBase):
    """Add Gaussian noise of constant standard deviation ``stddev`` (gradient units)."""

    def __init__(self, stddev: float) -> None:
        self.stddev_value = non_negative("stddev", stddev)

    def noise_stddev(self, step):
        return tf.constant(self.stddev_value, tf.float32)

    def get_config(self):
        return {"stddev": self.stddev_value}


@keras.saving.register_keras_serializable(package="robustkit")
class AnnealedGaussianNoise(_GaussianNoiseBase):
    """Add Gaussian noise of variance ``eta / (1 + t)^gamma`` at 0-based step t.

    Neelakantan et al. 2015, "Adding gradient noise improves learning for very deep networks"
    (they use eta in {0.01, 0.3, 1.0} and gamma = 0.55).
    """

    def __init__(self, eta: float, gamma: float = 0.55) -> None:
        self.eta = non_negative("eta", eta)
        self.gamma = non_negative("gamma", gamma)

    def noise_stddev(self, step):
        t = tf.cast(step, tf.float32)
        return tf.sqrt(self.eta / tf.pow(1.0 + t, self.gamma))

    def get_config(self):
        return {"eta": self.eta, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="robustkit")
class FreezeSmallWeights(GradientTransform):
    """No update for weight entries whose magnitude is below ``threshold`` (progressive pruning).

    Their gradient is set to 0 here (so later clipping ignores it) and again after the whole
    chain (so no noise reaches the inner optimizer's moments), and after the inner step their
    values are put back bit for bit, undoing momentum and weight decay too. The mask is taken
    from the weights before the step, so a weight that falls under the threshold stays frozen.
    Stateless: the mask is a function of the weights.
    """

    acts_after_step = True

    def __init__(self, threshold: float) -> None:
        self.threshold = positive("threshold", threshold)

    def mask(self, variable: Any) -> tf.Tensor:
        """Boolean mask of the entries of ``variable`` (its value now) under the threshold."""
        values = tf.convert_to_tensor(variable)
        return tf.abs(values) < tf.cast(self.threshold, values.dtype)

    def update(self, gradients, state, variables, step, seed):
        masks = [self.mask(v) for v in variables]
        return [zero_where(m, g) for m, g in zip(masks, gradients, strict=True)], state

    def update_scale(self, variables):
        return [UpdateScale(frozen=self.mask(v)) for v in variables]

    def get_config(self):
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package="robustkit")
class CheckNumerics(GradientTransform):
    """Stop the step with an error naming every variable whose gradient holds a NaN or an Inf.

    Raises ``tf.errors.InvalidArgumentError`` (from inside the compiled step) whose message
    starts with ``"robustkit: NaN or Inf gradient for variable(s):"`` followed by the variable
    paths. Put it first in the chain to see the raw gradients.
    """

    def update(self, gradients, state, variables, step, seed):
        names = tf.constant([variable_name(v) for v in variables])
        finite = tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        bad_names = tf.strings.reduce_join(
            tf.boolean_mask(names, tf.logical_not(finite)), separator=", "
        )
        check = tf.debugging.Assert(
            tf.reduce_all(finite), [NON_FINITE_MESSAGE, bad_names], summarize=len(variables)
        )
        with tf.control_dependencies([check]):
            return [tf.identity(g) for g in gradients], state


def clip_by_value(clip_value: float) -> ClipByValue:
    """Clip every gradient entry to ``[-clip_value, clip_value]``."""
    return ClipByValue(clip_value)


def clip_by_norm(clip_norm: float) -> ClipByNorm:
    """Clip each gradient tensor to L2 norm ``clip_norm``."""
    return ClipByNorm(clip_norm)


def clip_by_global_norm(clip_norm: float) -> ClipByGlobalNorm:
    """Clip all gradients jointly to global L2 norm ``clip_norm``."""
    return ClipByGlobalNorm(clip_norm)


def gaussian_noise(stddev: float) -> GaussianNoise:
    """Add N(0, stddev²) noise to every gradient entry."""
    return GaussianNoise(stddev)


def annealed_gaussian_noise(eta: float, gamma: float = 0.55) -> AnnealedGaussianNoise:
    """Add N(0, eta / (1 + t)^gamma) noise at step t (Neelakantan et al. 2015)."""
    return AnnealedGaussianNoise(eta, gamma)


def freeze_small_weights(threshold: float) -> FreezeSmallWeights:
    """Leave weight entries with ``|w| < threshold`` bit-identical."""
    return FreezeSmallWeights(threshold)


def check_numerics() -> CheckNumerics:
    """Fail on the first NaN or Inf gradient, naming the variable."""
    return CheckNumerics()
