"""Exception and warning types that robustkit users catch.

Every error robustkit raises on bad input is a :class:`RobustkitError` whose message
says what was wrong and how to fix it; :func:`positive_int` is the one check of a count.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RobustkitError(Exception):
    """Base class of every error robustkit raises on purpose."""


class InputError(RobustkitError, ValueError):
    """An argument is malformed: wrong shape, dtype, range, length or option."""


class ModelLoadError(RobustkitError):
    """A model file could not be loaded."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist."""


class NotAModelError(ModelLoadError):
    """The file exists but is not a Keras model."""


class UnsafeModelError(ModelLoadError):
    """The model needs unsafe deserialization (e.g. Lambda layers) and it was not allowed."""


class ImageReadError(RobustkitError):
    """An image file is corrupt, truncated or not an image."""


class OutputExistsError(RobustkitError):
    """Writing would overwrite existing results."""


class WorkerLostError(RobustkitError):
    """A worker of a multi-worker cluster stopped responding; the message names it and says
    how to resume."""


class RobustkitWarning(UserWarning):
    """Warnings robustkit emits, e.g. when logits cannot be recovered from a softmax head."""


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (a count: steps, restarts, samples, ...), or InputError."""
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.integer)):
        raise InputError(f"{name} must be an integer >= 1, got {value!r}.")
    if int(value) != value or int(value) < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(value)
