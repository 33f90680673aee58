"""robustkit: adversarial robustness and saliency for TensorFlow 2 / Keras 3."""

from robustkit.errors import (
    ImageReadError,
    InputError,
    ModelLoadError,
    ModelNotFoundError,
    NotAModelError,
    OutputExistsError,
    RobustkitError,
    RobustkitWarning,
    UnsafeModelError,
)

__version__ = "0.1.0"

__all__ = [
    "ImageReadError",
    "InputError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotAModelError",
    "OutputExistsError",
    "RobustkitError",
    "RobustkitWarning",
    "UnsafeModelError",
    "__version__",
]
