"""Training and validation inputs: NumPy arrays or a ``tf.data.Dataset`` of batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.models import Classifier


class Batches:
    """The batches of one data source, epoch after epoch.

    Args:
        data: ``(x, y)`` NumPy arrays (x float [N, H, W, C] in the classifier's bounds, y int
            [N]) or a ``tf.data.Dataset`` yielding ``(x, y)`` batches. Arrays are batched here
            (``batch_size`` is the global batch) and, with ``shuffle``, reordered each epoch by a
            permutation that depends only on ``(seed, epoch)``, so a resumed run sees the same
            order. A dataset is used as it is, every epoch (a shuffling one reshuffles afresh in
            each process, so a resumed run's order differs). A function ``epoch -> Dataset``
            gives each epoch its own batches: built from the epoch alone (e.g. a permutation
            seeded by ``(seed, epoch)``), a resumed run sees exactly the uninterrupted run's
            batches; epoch 0's dataset gives :meth:`first`.
    """

    def __init__(
        self,
        data: Any,
        classifier: Classifier,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        name: str,
    ) -> None:
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.name = name
        self._dataset: tf.data.Dataset | None = None
        self._per_epoch: Callable[[int], tf.data.Dataset] | None = None
        if callable(data) and not isinstance(data, tf.data.Dataset):
            per_epoch = data
            self._per_epoch = lambda epoch: _checked_dataset(per_epoch(epoch), classifier, name)
            data = per_epoch(0)
            if not isinstance(data, tf.data.Dataset):
                raise InputError(
                    f"{name}: a function of the epoch must return a tf.data.Dataset of (x, y) "
                    f"batches, got {type(data).__name__} for epoch 0."
                )
        if isinstance(data, tf.data.Dataset):
            self._dataset = _checked_dataset(data, classifier, name)
            self.x = self.y = None
            return
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise InputError(
                f"{name} must be a tuple (x, y) of arrays, a tf.data.Dataset of (x, y) "
                f"batches or a function epoch -> such a dataset, got {type(data).__name__}."
            )
        x = classifier.validate_images(data[0], name=f"{name} images")
        self.x = x.numpy()
        self.y = classifier.validate_labels(data[1], len(self.x), name=f"{name} labels").numpy()
        if len(self.x) == 0:
            raise InputError(f"{name} holds no examples.")

    @property
    def steps(self) -> int | None:
        """Batches per epoch, when known."""
        if self._dataset is not None:
            count = int(self._dataset.cardinality())
            return count if count >= 0 else None
        return -(-len(self.x) // self.batch_size)

    def epoch(self, epoch: int) -> tf.data.Dataset:
        """The dataset of (x float32 [B, H, W, C], y int32 [B]) batches for ``epoch``."""
        if self._per_epoch is not None:
            return self._per_epoch(int(epoch))
        if self._dataset is not None:
            return self._dataset
        order = np.arange(len(self.x))
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.x))
        dataset = tf.data.Dataset.from_tensor_slices((self.x[order], self.y[order]))
        return dataset.batch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def first(self, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``count`` examples (fewer if there are fewer; None: all of them), as NumPy
        arrays x float32 [n, H, W, C] and y int32 [n]."""
        if self._dataset is None:
            return self.x[:count], self.y[:count]
        xs, ys, taken = [], [], 0
        for x, y in self._dataset:
            xs.append(x.numpy())
            ys.append(y.numpy())
            taken += len(ys[-1])
            if count is not None and taken >= count:
                break
        if not xs:
            raise InputError(f"{self.name} holds no examples.")
        return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def _checked_dataset(dataset: tf.data.Dataset, classifier: Classifier, name: str) -> Any:
    """The dataset with x as float32 and y as int32, after checking its element structure."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise InputError(f"{name} must yield (images, labels) pairs, got elements {spec}.")
    x_spec, y_spec = spec
    if x_spec.shape.rank != 4 or tuple(x_spec.shape[1:]) != classifier.input_shape:
        raise InputError(
            f"{name} must yield image batches [B, {', '.join(map(str, classifier.input_shape))}]"
            f", got {x_spec.shape}. Batch an unbatched dataset with .batch(batch_size)."
        )
    if not x_spec.dtype.is_floating:
        raise InputError(
            f"{name} images must be floats in the classifier bounds {classifier.bounds}, got "
            f"{x_spec.dtype.name}; map them, e.g. tf.cast(x, tf.float32) / 255."
        )
    if y_spec.shape.rank != 1 or not y_spec.dtype.is_integer:
        raise InputError(
            f"{name} labels must be integer class indices [B], got {y_spec.dtype.name} "
            f"{y_spec.shape}."
        )
    return dataset.map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int32)))
