"""Gradient transforms, the ``Transformed`` Keras 3 optimizer wrapper and a DP-SGD step.

Typical use::

    from robustkit import optimizers as rko

    optimizer = rko.clipped_noisy(keras.optimizers.AdamW(1e-3), clip_norm=1.0, noise=0.01)
    optimizer = rko.Transformed(
        keras.optimizers.SGD(0.1, momentum=0.9),
        [rko.check_numerics(), rko.clip_by_global_norm(1.0), rko.annealed_gaussian_noise(0.01)],
        seed=0,
    )
    model.compile(optimizer=optimizer, ...)
"""

from robustkit.optimizers.dp import (
    DPSGDStep,
    PrivacySpent,
    clip_per_example,
    dp_sgd_privacy,
    per_example_gradients,
)
from robustkit.optimizers.transformed import (
    DEBUG_QUANTITIES,
    DebugRecordLogger,
    Transformed,
    clipped_noisy,
)
from robustkit.optimizers.transforms import (
    NON_FINITE_MESSAGE,
    AnnealedGaussianNoise,
    CheckNumerics,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    FreezeSmallWeights,
    GaussianNoise,
    GradientTransform,
    StepContext,
    annealed_gaussian_noise,
    check_numerics,
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    freeze_small_weights,
    gaussian_noise,
)

__all__ = [
    "DEBUG_QUANTITIES",
    "NON_FINITE_MESSAGE",
    "AnnealedGaussianNoise",
    "CheckNumerics",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByValue",
    "DPSGDStep",
    "DebugRecordLogger",
    "FreezeSmallWeights",
    "GaussianNoise",
    "GradientTransform",
    "PrivacySpent",
    "StepContext",
    "Transformed",
    "annealed_gaussian_noise",
    "check_numerics",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_per_example",
    "clipped_noisy",
    "dp_sgd_privacy",
    "freeze_small_weights",
    "gaussian_noise",
    "per_example_gradients",
]
