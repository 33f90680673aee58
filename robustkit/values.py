"""Results are values: the conversion of a result dataclass to NumPy arrays and to JSON that
:class:`~robustkit.attacks.AttackResult` and :class:`~robustkit.saliency.Attribution` share."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np


def as_numpy(result: Any) -> dict[str, Any]:
    """Every field of the dataclass ``result`` by name, as held (NumPy arrays and the rest)."""
    return {field.name: getattr(result, field.name) for field in fields(result)}


def as_json(result: Any, leave_out: str | None = None) -> dict[str, Any]:
    """Every field of ``result`` but ``leave_out`` (its big array), arrays as nested lists."""
    return {
        name: value.tolist() if isinstance(value, np.ndarray) else value
        for name, value in as_numpy(result).items()
        if name != leave_out
    }
