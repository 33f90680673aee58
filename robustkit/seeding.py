"""Per-example stateless random draws: what an example draws depends only on its own key.

TensorFlow's stateless generators take one seed per call, so two examples drawn in one batch
get numbers that depend on their positions in it. Attacks need each example's draws to depend
only on (seed, example index) -- the same adversarial whatever the batch size, chunking, early
stopping or entry point -- so they draw from a counter-based hash instead: every value is
``hash(example key, stream, element index)``, computed elementwise in the graph.

Keys are int32 [N, 2] tensors. The hash is Wellons' ``lowbias32`` integer finalizer (a
bijective avalanche mix of 32-bit words), evaluated in int64 arithmetic masked to 32 bits.
"""

from __future__ import annotations

import math

import tensorflow as tf

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # 2^32 / phi, separates the words mixed into one hash


def _wrap(words: tf.Tensor) -> tf.Tensor:
    """A product of 32-bit words back to 32 bits: masked in int64; uint32 wraps by itself
    (half the bytes of int64 and no mask, for the [N, *shape] draws)."""
    return words if words.dtype == tf.uint32 else tf.bitwise.bitwise_and(words, _MASK)


def _mix(words: tf.Tensor) -> tf.Tensor:
    """lowbias32 of 32-bit words held in int64 or uint32; returns the same dtype."""
    words = tf.bitwise.bitwise_xor(words, tf.bitwise.right_shift(words, 16))
    words = _wrap(words * tf.constant(0x7FEB352D, words.dtype))
    words = tf.bitwise.bitwise_xor(words, tf.bitwise.right_shift(words, 15))
    words = _wrap(words * tf.constant(0x846CA68B, words.dtype))
    return tf.bitwise.bitwise_xor(words, tf.bitwise.right_shift(words, 16))


def _combine(word: tf.Tensor, value: tf.Tensor | int) -> tf.Tensor:
    """hash(word, value) for 32-bit words in int64 or uint32 (broadcasting); ``value``'s own
    mix runs in int64 at its shape, then joins the word's dtype."""
    value = tf.bitwise.bitwise_and(tf.cast(value, tf.int64), _MASK)
    hashed = tf.cast(_mix(tf.bitwise.bitwise_and(value + _GOLDEN, _MASK)), word.dtype)
    return _mix(tf.bitwise.bitwise_xor(word, hashed))


def example_keys(seed: tf.Tensor, example_ids: tf.Tensor) -> tf.Tensor:
    """int32 [N, 2] keys of examples ``example_ids`` [N] under an int32 [2] seed."""
    seed = tf.cast(seed, tf.int64)
    ids = tf.cast(example_ids, tf.int64)
    first = _combine(_combine(_mix(seed[0] & _MASK), seed[1]), ids)
    second = _combine(first, ids + 1)
    return _to_int32(tf.stack([first, second], axis=1))


def as_keys(seed: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
    """Per-example keys [n, 2]: ``seed`` itself when it is [n, 2], else the keys of examples
    0..n-1 under the [2] seed."""
    seed = tf.convert_to_tensor(seed, tf.int32)
    if seed.shape.rank == 2:
        return seed
    return example_keys(seed, tf.range(n))


def fold_in(keys: tf.Tensor, value: tf.Tensor | int) -> tf.Tensor:
    """New keys [N, 2] for a sub-stream ``value`` (a restart, a query, a target pass)."""
    words = tf.bitwise.bitwise_and(tf.cast(keys, tf.int64), _MASK)
    first = _combine(words[:, 0], _combine(words[:, 1], value))
    second = _combine(first, tf.cast(value, tf.int64) + 7)
    return _to_int32(tf.stack([first, second], axis=1))


def _to_int32(words: tf.Tensor) -> tf.Tensor:
    """32-bit words held in int64 -> int32 with the same bits."""
    return tf.cast(tf.where(words >= 2**31, words - 2**32, words), tf.int32)


def _bits(keys: tf.Tensor, shape: tf.TensorShape | list[int] | tf.Tensor) -> tf.Tensor:
    """Hash words uint32 [N, *shape] of 32 random bits each.

    The per-row and per-counter words are hashed in int64 at their own shapes; the [N, *shape]
    part in uint32 (the same bits as int64 masked to 32 bits, at half the bytes and ops).
    """
    words = tf.bitwise.bitwise_and(tf.cast(keys, tf.int64), _MASK)
    row = tf.cast(_combine(words[:, 0], words[:, 1]), tf.uint32)
    shape = tf.cast(tf.convert_to_tensor(shape, tf.int32), tf.int64)
    count = tf.reduce_prod(shape)
    counters = tf.range(count, dtype=tf.int64)
    flat = _mix(tf.bitwise.bitwise_xor(_combine(row[:, None], counters[None, :]), row[:, None]))
    return tf.reshape(flat, tf.concat([tf.shape(keys, out_type=tf.int64)[:1], shape], 0))


def uniform(
    keys: tf.Tensor,
    shape: tf.TensorShape | list[int] | tf.Tensor,
    minval: float | tf.Tensor = 0.0,
    maxval: float | tf.Tensor = 1.0,
) -> tf.Tensor:
    """float32 [N, *shape] uniform in (minval, maxval), row i from keys[i] alone."""
    bits = tf.bitwise.right_shift(_bits(keys, shape), 8)  # 24 bits: exact in float32
    unit = (tf.cast(bits, tf.float32) + 0.5) * (1.0 / 2**24)
    return minval + (maxval - minval) * unit


def normal(keys: tf.Tensor, shape: tf.TensorShape | list[int] | tf.Tensor) -> tf.Tensor:
    """float32 [N, *shape] standard normal (Box-Muller), row i from keys[i] alone."""
    first = uniform(fold_in(keys, 1), shape)
    second = uniform(fold_in(keys, 2), shape)
    return tf.sqrt(-2.0 * tf.math.log(first)) * tf.cos(2.0 * math.pi * second)


def integers(keys: tf.Tensor, maxval: tf.Tensor) -> tf.Tensor:
    """int32 [N] uniform in [0, maxval) per example (maxval an int scalar or [N], >= 1)."""
    unit = uniform(keys, [])
    maxval = tf.cast(maxval, tf.float32)
    return tf.cast(tf.minimum(tf.floor(unit * maxval), maxval - 1), tf.int32)


def signs(keys: tf.Tensor, shape: tf.TensorShape | list[int] | tf.Tensor) -> tf.Tensor:
    """float32 [N, *shape] of ±1 with equal odds."""
    top_bit = tf.cast(tf.bitwise.right_shift(_bits(keys, shape), 31), tf.int32)
    return tf.cast(2 * top_bit - 1, tf.float32)
