"""Reading the MNIST idx files (gzipped or plain) from a local folder; never downloads."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from robustkit.errors import InputError

_IMAGES_MAGIC = 2051  # idx3, unsigned bytes
_LABELS_MAGIC = 2049  # idx1, unsigned bytes
_SPLIT_PREFIXES = {"test": "t10k", "train": "train"}


def _read_idx(path: Path, magic: int, dimensions: int) -> np.ndarray:
    """The uint8 array stored in one idx file, shaped by its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise InputError(f"Cannot read MNIST file {path}: {error}. Re-copy the file.") from error
    header_size = 4 * (1 + dimensions)
    header = np.frombuffer(data[:header_size], dtype=">u4") if len(data) >= header_size else []
    if len(header) != 1 + dimensions or int(header[0]) != magic:
        raise InputError(f"{path} is not an MNIST idx file (magic number {magic} expected).")
    shape = tuple(int(d) for d in header[1:])
    values = np.frombuffer(data, dtype=np.uint8, offset=header_size)
    if values.size != int(np.prod(shape)):
        raise InputError(
            f"{path} holds {values.size} bytes of data but its header says {shape}; "
            "the file is truncated. Re-copy it."
        )
    return values.reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise InputError(f"{directory} has no {stem}.gz (or {stem}); point to the MNIST folder.")


def load_mnist(
    directory: str | os.PathLike[str], split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split from ``directory``.

    Args:
        directory: folder holding ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``
            (or the ``train-`` files, or the same names without ``.gz``).
        split: "test" (10,000 digits) or "train" (60,000).

    Returns:
        images uint8 [N, 28, 28] (0 = black background, 255 = ink) and labels int64 [N] in 0..9.
    """
    if split not in _SPLIT_PREFIXES:
        raise InputError(f"split must be one of {sorted(_SPLIT_PREFIXES)}, got {split!r}.")
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"MNIST folder not found: {directory}.")
    prefix = _SPLIT_PREFIXES[split]
    images = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"), _IMAGES_MAGIC, 3)
    labels = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"), _LABELS_MAGIC, 1)
    if images.shape[0] != labels.shape[0]:
        raise InputError(
            f"MNIST {split} images ({images.shape[0]}) and labels ({labels.shape[0]}) differ "
            "in number; the files do not belong together."
        )
    return images.copy(), labels.astype(np.int64)
