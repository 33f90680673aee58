"""Transforms with state: clipping at a running quantile of gradient norms, and top-k gradient
sparsification with error feedback.

Their state lives in optimizer variables that :class:`~robustkit.optimizers.Transformed`
creates in ``build`` from ``init`` and writes after every step, so it is saved with the
optimizer and a resumed run continues bit for bit. Under ``tf.distribute`` every replica sees
the same all-reduced gradients, so every replica computes the same state.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.optimizers.transforms import GradientTransform, global_norm


@keras.saving.register_keras_serializable(package="robustkit")
class ClipByRunningQuantile(GradientTransform):
    """Clip the global gradient norm at the ``quantile`` of the last ``window`` norms.

    At step t, with n_t the global L2 norm of the incoming gradients (after the transforms
    before this one):

    1. n_t joins the history H, the last ``window`` finite norms seen (a ring buffer; before
       ``window`` steps it holds all of them). A non-finite n_t is not recorded.
    2. The threshold is c_t = the ``quantile`` of H with NumPy's default (linear) interpolation,
       ``np.quantile(H, quantile)``: sorted H at index q·(|H|-1), interpolated between the two
       neighbours.
    3. The gradients are scaled by 1 if n_t <= c_t, else by c_t / n_t. A non-finite n_t makes
       them NaN (as :class:`ClipByGlobalNorm` does), for :class:`CheckNumerics` or the loss to
       show.

    H includes n_t, as in AutoClip (Seetharaman et al. 2020, which uses all past norms): the
    first step is never clipped, and ``quantile=1`` never clips. The paper's 10th percentile
    (``quantile=0.1``) clips about nine steps in ten, to a low recent norm.

    State: the window of norms (float32 [window]) and the count of norms recorded (int64).

    Args:
        quantile: q in (0, 1].
        window: W, the number of recent norms kept (>= 1).
    """

    clips = True

    def __init__(self, quantile: float, window: int = 100) -> None:
        if not (isinstance(quantile, int | float) and 0 < quantile <= 1):
            raise InputError(f"quantile must be a number in (0, 1], got {quantile!r}.")
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 1):
            raise InputError(f"window must be an int >= 1, got {window!r}.")
        self.quantile = float(quantile)
        self.window = window

    def init(self, variables):
        return (tf.zeros([self.window], tf.float32), tf.zeros([], tf.int64))

    def threshold(self, norms: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
        """The ``quantile`` of the ``min(count, window)`` recorded entries of ``norms``."""
        size = tf.minimum(count, self.window)
        valid = tf.range(self.window, dtype=tf.int64) < size
        ordered = tf.sort(tf.where(valid, norms, float("inf")))
        position = self.quantile * tf.cast(tf.maximum(size - 1, 0), tf.float64)
        low = tf.cast(tf.floor(position), tf.int64)
        high = tf.minimum(low + 1, tf.maximum(size - 1, 0))
        fraction = tf.cast(position - tf.floor(position), tf.float32)
        below, above = tf.gather(ordered, low), tf.gather(ordered, high)
        return below + fraction * (above - below)

    def update(self, gradients, state, variables, step, seed):
        norms, count = state
        norm = global_norm(gradients)
        finite = tf.math.is_finite(norm)
        slot = tf.math.floormod(count, self.window)
        recorded = tf.tensor_scatter_nd_update(norms, slot[tf.newaxis, tf.newaxis], norm[None])
        norms = tf.where(finite, recorded, norms)
        count = count + tf.cast(finite, tf.int64)
        limit = self.threshold(norms, count)
        scale = tf.where(norm <= limit, 1.0, limit / norm)
        scale = tf.where(finite, scale, float("nan"))
        return [g * tf.cast(scale, g.dtype) for g in gradients], (norms, count)

    def get_config(self):
        return {"quantile": self.quantile, "window": self.window}


@keras.saving.register_keras_serializable(package="robustkit")
class TopKSparsify(GradientTransform):
    """Keep the largest-magnitude ``fraction`` of each gradient tensor, zero the rest; with error
    feedback the dropped rest is carried over and added to the next step's gradient.

    Per tensor of n entries, k = max(1, ceil(fraction · n)) entries are kept: a = g + e (e the
    carried remainder, 0 at the start or without error feedback), kept = a on the k entries of
    largest |a| (ties: the lower flat index first) and 0 elsewhere, new e = a - kept, exactly
    (each entry lies in one of the two). This is "sparsified SGD with memory" (Stich et al.
    2018; Lin et al. 2018, Deep Gradient Compression), layer-wise. Without error feedback the
    rest is dropped and the transform keeps no state.

    State (error feedback): one remainder per variable, shaped and typed like it.

    Args:
        fraction: share of the entries kept, in (0, 1].
        error_feedback: carry the dropped rest to the next step.
    """

    def __init__(self, fraction: float, error_feedback: bool = True) -> None:
        if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
            raise InputError(f"fraction must be a number in (0, 1], got {fraction!r}.")
        self.fraction = float(fraction)
        self.error_feedback = bool(error_feedback)

    def keep_count(self, size: int) -> int:
        """k, the entries kept of a tensor of ``size`` entries."""
        return min(size, max(1, math.ceil(self.fraction * size)))

    def init(self, variables):
        if not self.error_feedback:
            return ()
        return tuple(tf.zeros(v.shape, v.dtype) for v in variables)

    def split(self, accumulated: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(kept, rest)`` of one tensor: its top-k entries by magnitude and the others."""
        size = accumulated.shape.num_elements()
        k = self.keep_count(size)
        if k >= size:
            return accumulated, tf.zeros_like(accumulated)
        flat = tf.reshape(accumulated, [-1])
        _, indices = tf.math.top_k(tf.abs(flat), k, sorted=True)
        chosen = tf.scatter_nd(indices[:, tf.newaxis], tf.ones([k], tf.float32), [size]) > 0
        mask = tf.reshape(chosen, accumulated.shape)
        zeros = tf.zeros_like(accumulated)
        return tf.where(mask, accumulated, zeros), tf.where(mask, zeros, accumulated)

    def update(self, gradients, state, variables, step, seed):
        remainders = state if self.error_feedback else [None] * len(gradients)
        kept, rests = [], []
        for gradient, remainder in zip(gradients, remainders, strict=True):
            accumulated = gradient if remainder is None else gradient + remainder
            top, rest = self.split(accumulated)
            kept.append(top)
            rests.append(rest)
        return kept, (tuple(rests) if self.error_feedback else state)

    def get_config(self):
        return {"fraction": self.fraction, "error_feedback": self.error_feedback}


def clip_by_running_quantile(quantile: float, window: int = 100) -> ClipByRunningQuantile:
    """Clip the global norm at the ``quantile`` of the last ``window`` global norms (stateful)."""
    return ClipByRunningQuantile(quantile, window)


def top_k_sparsify(fraction: float, error_feedback: bool = True) -> TopKSparsify:
    """Keep the top ``fraction`` of each gradient by magnitude; carry the rest over (stateful)."""
    return TopKSparsify(fraction, error_feedback)
