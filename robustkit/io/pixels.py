"""The 8-bit pixel grid: float images in ``bounds`` <-> uint8 codes, exactly.

Code ``k`` stands for the float ``low + k * (high - low) / 255``: the grid that attacks with
``quantize=255`` finish on. ``to_uint8(from_uint8(codes)) == codes`` for every code, so an image
on the grid survives a PNG round trip bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustkit.errors import InputError

LEVELS = 255  # grid steps across the bounds of an 8-bit image


def _span(bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not low < high:
        raise InputError(f"bounds must satisfy low < high, got {bounds!r}.")
    return low, high - low


def from_uint8(codes: Any, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Float32 pixels (same shape) for uint8 codes: ``low + code * (high - low) / 255``."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise InputError(f"codes must be uint8, got {codes.dtype}.")
    low, span = _span(bounds)
    return (low + codes.astype(np.float64) * (span / LEVELS)).astype(np.float32)


def to_uint8(x: Any, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """The nearest 8-bit codes (same shape, uint8) for float pixels in ``bounds``.

    Values may lie outside the bounds by less than half a grid step (float round-off); anything
    further out, or NaN/Inf, raises InputError rather than being clipped silently.
    """
    x = np.asarray(x, dtype=np.float64)
    low, span = _span(bounds)
    steps = (x - low) * (LEVELS / span)
    if not np.all(np.isfinite(steps)):
        raise InputError("Cannot write NaN or Inf pixels to an 8-bit image.")
    if steps.size and (steps.min() < -0.5 or steps.max() > LEVELS + 0.5):
        raise InputError(
            f"Pixels lie outside the bounds {bounds}: range "
            f"[{low + steps.min() * span / LEVELS:g}, {low + steps.max() * span / LEVELS:g}]. "
            "Clip the images to the bounds (or pass the right bounds) before saving."
        )
    return np.clip(np.rint(steps), 0, LEVELS).astype(np.uint8)
