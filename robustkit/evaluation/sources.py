"""Where an evaluation's examples come from: arrays in memory, or a source read chunk by chunk.

An :class:`ExampleSource` knows its labels up front and reads images by index, so the evaluator
holds one chunk of images at a time (an image folder of any size evaluates in bounded memory).
:class:`ArraySource` wraps (x, y) arrays; :class:`LazyImages` lets code that indexes an image
array (``x[i]``, ``x[a:b]``, ``x[idx]``) read from a source instead.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

STREAM_CHUNK_BATCHES = 4  # compiled batches of images held at once when reading a source


@runtime_checkable
class ExampleSource(Protocol):
    """N labelled examples whose images are read on demand.

    Attributes:
        labels: int64 [N] true class indices, known before any image is read.
    """

    labels: np.ndarray

    def __len__(self) -> int: ...

    def images(self, indices: np.ndarray) -> np.ndarray:
        """float32 [m, H, W, C] images of examples ``indices`` [m] in the classifier's bounds,
        the same bytes every time they are read."""
        ...

    def identity(self) -> dict[str, Any]:
        """What the examples are (JSON types): an evaluation resumed from a checkpoint must
        find the same."""
        ...


def digest(values: np.ndarray) -> str:
    """SHA-256 (hex) of an array's shape, dtype and bytes."""
    hashed = hashlib.sha256(f"{values.shape} {values.dtype}".encode())
    hashed.update(np.ascontiguousarray(values).tobytes())
    return hashed.hexdigest()


class ArraySource:
    """Examples held in memory: images x [N, H, W, C] float32 and labels y [N] int64."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = x
        self.labels = y

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices: np.ndarray) -> np.ndarray:
        return self.x[indices]

    def identity(self) -> dict[str, Any]:
        return {"images_sha256": digest(self.x), "labels_sha256": digest(self.labels)}


class LazyImages:
    """An image array view of ``source``: indexing with an int, a slice or an index array reads
    just those images (float32, [H, W, C] for an int, else [m, H, W, C])."""

    def __init__(self, source: ExampleSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self.source.images(np.array([int(key)]))[0]
        if isinstance(key, slice):
            return self.source.images(np.arange(*key.indices(len(self))))
        return self.source.images(np.asarray(key, dtype=np.int64))


def image_array(source: ExampleSource) -> Any:
    """The source's images as something indexable like an array: the array itself when it is
    in memory, else a :class:`LazyImages` view that reads on demand."""
    return source.x if isinstance(source, ArraySource) else LazyImages(source)
