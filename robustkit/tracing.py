"""Compiled functions with a fixed input signature, each counted alone by TensorFlow.

TensorFlow's retracing detector counts traces per Python code object, not per ``tf.function``.
robustkit builds one-trace functions per classifier, attack or method from one piece of code
(the attack driver for every attack, a method's graph for every classifier), so their single
traces would add up, and from the fifth TensorFlow logs "triggered tf.function retracing" though
none retraced. A ``functools.partial`` has no code object, so each function is counted alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf


def compile_with_signature(function: Callable[..., Any], signature: Sequence[Any]) -> Any:
    """``tf.function(function, input_signature=signature)``: one trace, and never counted with
    the traces of other functions built from the same code."""
    return tf.function(functools.partial(function), input_signature=list(signature))
