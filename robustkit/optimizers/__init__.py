"""Gradient transforms with explicit state, the ``Transformed`` Keras 3 optimizer wrapper, and a
DP-SGD step.

A transform is ``init(variables) -> state`` and ``update(gradients, state, variables, step,
seed) -> (gradients, state)`` (Optax's ``GradientTransformation``); ``Transformed`` keeps each
state in optimizer variables, so it is saved and resumed with the optimizer. Typical use::

    from robustkit import optimizers as rko

    optimizer = rko.clipped_noisy(keras.optimizers.AdamW(1e-3), clip_norm=1.0, noise=0.01)
    optimizer = rko.Transformed(
        keras.optimizers.SGD(0.1, momentum=0.9),
        [
            rko.check_numerics(),
            rko.scale_by_pattern([("*base*", 0.1)]),  # a pretrained base at a tenth of the rate
            rko.adaptive_grad_clip(0.02),  # or rko.clip_by_running_quantile(0.9, window=100)
            rko.annealed_gaussian_noise(0.01),
        ],
        seed=0,
    )
    model.compile(optimizer=optimizer, ...)
"""

from robustkit.optimizers.debug import DEBUG_QUANTITIES, DebugRecordLogger
from robustkit.optimizers.dp import (
    DPSGDStep,
    PrivacySpent,
    clip_per_example,
    dp_sgd_privacy,
    per_example_gradients,
)
from robustkit.optimizers.scaling import (
    AdaptiveGradClip,
    ScaleByPattern,
    adaptive_grad_clip,
    scale_by_pattern,
    unitwise_norm,
)
from robustkit.optimizers.stateful import (
    ClipByRunningQuantile,
    TopKSparsify,
    clip_by_running_quantile,
    top_k_sparsify,
)
from robustkit.optimizers.transformed import Transformed, clipped_noisy
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
    UpdateScale,
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
    "AdaptiveGradClip",
    "AnnealedGaussianNoise",
    "CheckNumerics",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByRunningQuantile",
    "ClipByValue",
    "DPSGDStep",
    "DebugRecordLogger",
    "FreezeSmallWeights",
    "GaussianNoise",
    "GradientTransform",
    "PrivacySpent",
    "ScaleByPattern",
    "TopKSparsify",
    "Transformed",
    "UpdateScale",
    "adaptive_grad_clip",
    "annealed_gaussian_noise",
    "check_numerics",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_running_quantile",
    "clip_by_value",
    "clip_per_example",
    "clipped_noisy",
    "dp_sgd_privacy",
    "freeze_small_weights",
    "gaussian_noise",
    "per_example_gradients",
    "scale_by_pattern",
    "top_k_sparsify",
    "unitwise_norm",
]
