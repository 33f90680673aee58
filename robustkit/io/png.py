"""Exact 8-bit PNG files: what is written is bit for bit what is read back."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from robustkit.errors import InputError
from robustkit.io.files import atomic_write
from robustkit.io.pixels import to_uint8

_MODES = {1: "L", 3: "RGB"}


def write_png(path: str | os.PathLike[str], codes: Any) -> None:
    """Write uint8 codes [H, W, C] (C = 1 or 3) as a lossless PNG, atomically."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 3 or codes.shape[-1] not in _MODES:
        raise InputError(
            f"PNG pixels must be uint8 [H, W, 1 or 3], got {codes.dtype} {codes.shape}. "
            "Convert floats with robustkit.io.to_uint8."
        )
    image = Image.fromarray(
        codes[..., 0] if codes.shape[-1] == 1 else codes, _MODES[codes.shape[-1]]
    )
    with atomic_write(path, "wb") as stream:
        image.save(stream, format="PNG")


def save_image(
    path: str | os.PathLike[str], x: Any, bounds: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """Write float pixels [H, W, C] in ``bounds`` as an 8-bit PNG; returns the codes written."""
    codes = to_uint8(x, bounds)
    write_png(path, codes)
    return codes


def perturbation_codes(delta: Any) -> np.ndarray:
    """A visible picture of a perturbation [H, W, C]: mid-grey is zero, amplified so the largest
    change of the image reaches black or white. Returns uint8 codes of the same shape."""
    delta = np.asarray(delta, dtype=np.float64)
    peak = float(np.max(np.abs(delta))) if delta.size else 0.0
    scaled = delta / peak if peak > 0 else np.zeros_like(delta)
    return np.clip(np.rint(127.5 + 127.5 * scaled), 0, 255).astype(np.uint8)
