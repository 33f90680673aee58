"""Decoding one image file to 8-bit codes, whatever the file holds.

Files are decoded with Pillow into uint8 codes [H, W, C] on the 8-bit grid (see
:mod:`robustkit.io.pixels`), converted to the model's channel count (1 = grayscale, 3 = RGB) and,
only when asked, resized. A file is hostile input until decoded: any failure of the decoder
(corrupt or truncated data, declared dimensions past Pillow's ``MAX_IMAGE_PIXELS``, a zero-size
image, which Pillow does not identify) becomes one :class:`~robustkit.errors.ImageReadError`
naming the file, never another exception. Pillow's own warnings about a damaged file become
notes on the image.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from robustkit.errors import ImageReadError, InputError

RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# Notes attached to images whose conversion changed them; callers count identical notes.
NOTE_ALPHA = "alpha channel dropped"
NOTE_TO_GRAY = "colour converted to grayscale"
NOTE_TO_RGB = "grayscale replicated to RGB"
NOTE_16_BIT = "16-bit pixels reduced to 8 bits"
NOTE_FIRST_FRAME = "first frame of an animation used"
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _read_error(path: Path, error: BaseException) -> ImageReadError:
    """The one-line ImageReadError for a file the decoder failed on."""
    if isinstance(error, UnidentifiedImageError):
        return ImageReadError(f"{path}: not a readable image (Pillow cannot identify it).")
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageReadError(
            f"{path}: too many pixels to decode safely (over Pillow's limit of "
            f"{Image.MAX_IMAGE_PIXELS:,}, PIL.Image.MAX_IMAGE_PIXELS; raise it only for files "
            "you trust)."
        )
    message = " ".join(str(error).split()) or type(error).__name__
    return ImageReadError(f"{path}: cannot decode the image ({message}).")


@contextlib.contextmanager
def _opened(path: Path, notes: list[str]) -> Iterator[Image.Image]:
    """The Pillow image of ``path``; every decoder failure inside the block is ImageReadError.

    A decompression-bomb warning (more than ``MAX_IMAGE_PIXELS``) is an error; Pillow's other
    warnings about the file (damaged metadata) are added to ``notes``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as opened:
                yield opened
        except ImageReadError:
            raise
        # Pillow's decoders raise many types on hostile data (TypeError, struct.error, ...):
        # whatever the decoder raises means that this file cannot be read.
        except Exception as error:
            raise _read_error(path, error) from error
    notes.extend(f"decoder warning: {' '.join(str(w.message).split())}" for w in caught)


def _to_8_bit(image: Image.Image, path: Path, notes: list[str]) -> Image.Image:
    """The image as 8-bit L or RGB (alpha dropped, palettes expanded, 16-bit reduced)."""
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in _ALPHA_MODES:
        notes.append(NOTE_ALPHA)
        return image.convert("L" if mode in ("LA", "La") else "RGB")
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{path}: 32-bit integer pixels are not supported.")
        notes.append(NOTE_16_BIT)
        codes = np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(codes, mode="L")
    if mode == "F":
        raise ImageReadError(f"{path}: floating-point pixels are not supported; save as 8-bit.")
    if mode in ("1", "L", "RGB"):
        return image.convert("L") if mode == "1" else image
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def read_image(
    path: str | os.PathLike[str],
    *,
    channels: int,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decode one image file to uint8 codes [H, W, channels] on the 8-bit grid.

    Args:
        channels: 1 (grayscale, ITU-R 601-2 luma) or 3 (RGB; grayscale is replicated).
        size: (height, width) the result must have; None keeps the file's size.
        resize: a :data:`RESIZE_METHODS` name; without it a size mismatch raises InputError.

    Returns:
        The codes and the notes on conversions that changed the image.

    Raises:
        ImageReadError: corrupt, truncated, zero-size, too large or non-image file.
        InputError: wrong size and no resize method.
    """
    if channels not in (1, 3):
        raise InputError(f"Images can be read for 1 or 3 channels, not {channels}.")
    if resize is not None and resize not in RESIZE_METHODS:
        raise InputError(f"Unknown resize method {resize!r}; choose one of {list(RESIZE_METHODS)}.")
    path = Path(path)
    notes: list[str] = []
    with _opened(path, notes) as opened:
        if getattr(opened, "n_frames", 1) > 1:
            notes.append(NOTE_FIRST_FRAME)
            opened.seek(0)
        opened.load()
        image = _to_8_bit(opened, path, notes)
    wanted_mode = "L" if channels == 1 else "RGB"
    if image.mode != wanted_mode:
        notes.append(NOTE_TO_GRAY if channels == 1 else NOTE_TO_RGB)
        image = image.convert(wanted_mode)
    if size is not None and (image.height, image.width) != tuple(size):
        height, width = size
        if resize is None:
            raise InputError(
                f"{path} is {image.width}x{image.height} pixels but the model takes "
                f"{width}x{height}. Resize the images beforehand, or choose a resize method "
                f"(CLI: --resize bilinear; one of {', '.join(RESIZE_METHODS)})."
            )
        image = image.resize((width, height), RESIZE_METHODS[resize])
        notes.append(f"resized to {width}x{height} ({resize})")
    codes = np.asarray(image, dtype=np.uint8)
    return codes.reshape(image.height, image.width, channels), notes


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) read from the file header only; ImageReadError when unreadable (as
    :func:`read_image` would find it from the header alone)."""
    with _opened(Path(path), []) as opened:
        return opened.height, opened.width
