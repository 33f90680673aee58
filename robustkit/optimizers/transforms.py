"""Composable gradient transforms: small pieces applied in order to the list of gradients.

Each transform maps ``(gradients, variables, context) -> gradients`` inside the optimizer's
compiled step; :class:`~robustkit.optimizers.Transformed` runs them in the order given and owns
their state (the step count and the noise seed in :class:`StepContext`). Gradients are dense
float tensors shaped like their variables, already summed over replicas.
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


@dataclasses.dataclass
class StepContext:
    """What a transform sees of the step besides the gradients.

    Attributes:
        step: int64 scalar tensor, the number of earlier steps of the optimizer (0 at the first).
        key: int64 [2] stateless-RNG key of this transform at this step (distinct per transform
            and per step, the same on every replica).
        noise_variance: sum of the variances of the noise added so far (float32 scalar).
        frozen: per variable, None or a boolean mask of entries whose update is undone after the
            inner optimizer's step, with the values to restore: ``(mask, values_before)``.
    """

    step: tf.Tensor
    key: tf.Tensor
    noise_variance: tf.Tensor
    frozen: list[tuple[tf.Tensor, tf.Tensor] | None]


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

    One draw for all tensors (a single kernel instead of one per variable), split and reshaped.
    """
    sizes = [t.shape.num_elements() for t in tensors]
    noise = tf.random.stateless_normal([sum(sizes)], seed=key, stddev=stddev)
    return [
        tf.cast(tf.reshape(piece, tf.shape(t)), t.dtype)
        for t, piece in zip(tensors, tf.split(noise, sizes), strict=True)
    ]


class GradientTransform:
    """One link of the chain. Subclasses implement :meth:`__call__` and keep a JSON config.

    Class attributes:
        clips: the transform bounds the gradients; the debug record takes the global norm after
            the last clipping transform as "clipped_grad_norm".
    """

    clips = False

    def __call__(
        self, gradients: list[tf.Tensor], variables: list[Any], context: StepContext
    ) -> list[tf.Tensor]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GradientTransform:
        return cls(**config)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InputError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByValue(GradientTransform):
    """Clip every gradient entry to ``[-clip_value, clip_value]``."""

    clips = True

    def __init__(self, clip_value: float) -> None:
        self.clip_value = _positive("clip_value", clip_value)

    def __call__(self, gradients, variables, context):
        return [tf.clip_by_value(g, -self.clip_value, self.clip_value) for g in gradients]

    def get_config(self):
        return {"clip_value": self.clip_value}


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByNorm(GradientTransform):
    """Scale each gradient tensor separately to L2 norm at most ``clip_norm``."""

    clips = True

    def __init__(self, clip_norm: float) -> None:
        self.clip_norm = _positive("clip_norm", clip_norm)

    def __call__(self, gradients, variables, context):
        return [tf.clip_by_norm(g, self.clip_norm) for g in gradients]

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
        self.clip_norm = _positive("clip_norm", clip_norm)

    def __call__(self, gradients, variables, context):
        clipped, _ = tf.clip_by_global_norm(gradients, self.clip_norm)
        return clipped

    def get_config(self):
        return {"clip_norm": self.clip_norm}


class _GaussianNoiseBase(GradientTransform):
    """Adds i.i.d. N(0, stddev(t)²) to every gradient entry, drawn from the step's stateless key."""

    def stddev(self, step: tf.Tensor) -> tf.Tensor:
        """Noise standard deviation (gradient units, float32 scalar) at 0-based ``step``."""
        raise NotImplementedError

    def __call__(self, gradients, variables, context):
        stddev = self.stddev(context.step)
        context.noise_variance = context.noise_variance + tf.square(stddev)
        noise = gaussian_like(gradients, context.key, stddev)
        return [g + n for g, n in zip(gradients, noise, strict=True)]


@keras.saving.register_keras_serializable(package="robustkit")
class GaussianNoise(_GaussianNoiseBase):
    """Add Gaussian noise of constant standard deviation ``stddev`` (gradient units)."""

    def __init__(self, stddev: float) -> None:
        self.stddev_value = _non_negative("stddev", stddev)

    def stddev(self, step):
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
        self.eta = _non_negative("eta", eta)
        self.gamma = _non_negative("gamma", gamma)

    def stddev(self, step):
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
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = _positive("threshold", threshold)

    def __call__(self, gradients, variables, context):
        frozen_gradients = []
        for index, (gradient, variable) in enumerate(zip(gradients, variables, strict=True)):
            values = tf.identity(variable)
            mask = tf.abs(values) < tf.cast(self.threshold, values.dtype)
            if context.frozen[index] is not None:
                earlier_mask, earlier_values = context.frozen[index]
                mask = tf.logical_or(mask, earlier_mask)
                values = earlier_values
            context.frozen[index] = (mask, values)
            frozen_gradients.append(zero_where(mask, gradient))
        return frozen_gradients

    def get_config(self):
        return {"threshold": self.threshold}


@keras.saving.register_keras_serializable(package="robustkit")
class CheckNumerics(GradientTransform):
    """Stop the step with an error naming every variable whose gradient holds a NaN or an Inf.

    Raises ``tf.errors.InvalidArgumentError`` (from inside the compiled step) whose message
    starts with ``"robustkit: NaN or Inf gradient for variable(s):"`` followed by the variable
    paths. Put it first in the chain to see the raw gradients.
    """

    def __call__(self, gradients, variables, context):
        names = tf.constant([variable_name(v) for v in variables])
        finite = tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
        bad_names = tf.strings.reduce_join(
            tf.boolean_mask(names, tf.logical_not(finite)), separator=", "
        )
        check = tf.debugging.Assert(
            tf.reduce_all(finite), [NON_FINITE_MESSAGE, bad_names], summarize=len(variables)
        )
        with tf.control_dependencies([check]):
            return [tf.identity(g) for g in gradients]


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
