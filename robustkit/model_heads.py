"""Logits of a model whose head ends in softmax: the pre-softmax output, without cloning.

A final softmax Dense, Activation or Softmax layer is unwrapped to a functional view ending at
its input (same layers, same variables); a Sequential ending in a nested model with such a head
(``keras.Sequential([Rescaling(...), keras.applications.ResNet50()])``) runs its other layers,
then that model's logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf


def _is_softmax(activation: Any) -> bool:
    return getattr(activation, "__name__", None) == "softmax"


def _softmax_head(model: Any) -> keras.layers.Layer | None:
    """The model's final layer if it ends in softmax, else None."""
    layers = getattr(model, "layers", None)
    if not layers or not getattr(model, "inputs", None):
        return None
    last = layers[-1]
    if isinstance(last, keras.layers.Softmax):
        return last
    if isinstance(last, (keras.layers.Dense, keras.layers.Activation)) and _is_softmax(
        getattr(last, "activation", None)
    ):
        return last
    return None


def _nested_softmax_model(model: Any) -> keras.Model | None:
    """The last layer of a Sequential model when it is itself a model whose softmax head can be
    unwrapped, as in ``keras.Sequential([Rescaling(...), keras.applications.ResNet50()])``."""
    if not isinstance(model, keras.Sequential) or not model.layers:
        return None
    if not getattr(model, "inputs", None):  # not built: its input shape is unknown
        return None
    last = model.layers[-1]
    if isinstance(last, keras.Model) and (
        _softmax_head(last) is not None or _nested_softmax_model(last) is not None
    ):
        return last
    return None


def logits_function(model: Any) -> tuple[Callable[..., tf.Tensor], str]:
    """A function ``(x, training) -> logits`` sharing the model's weights, and how it was found.

    For a softmax head this is a functional view ending at the head's input (same layers, same
    variables; no clone), followed by the head's affine part for a softmax Dense. A Sequential
    model ending in a nested model with a softmax head runs its other layers, then that model's
    logits function.
    """
    head = _softmax_head(model)
    if head is None:
        nested = _nested_softmax_model(model)
        if nested is None:
            return (lambda x, training=False: model(x, training=training)), "model output"
        inner, source = logits_function(nested)
        source = f"{source} in nested model {nested.name!r}"
        if len(model.layers) == 1:
            return inner, source
        leading = keras.Sequential(
            [keras.Input(model.inputs[0].shape[1:]), *model.layers[:-1]],
            name=f"{model.name}_before_{nested.name}",
        )
        return (
            lambda x, training=False: inner(leading(x, training=training), training=training)
        ), source
    features = keras.Model(model.inputs, head.input, name=f"{model.name}_pre_softmax")
    if isinstance(head, keras.layers.Dense):

        def dense_logits(x: tf.Tensor, training: bool = False) -> tf.Tensor:
            z = tf.matmul(features(x, training=training), head.kernel)
            return z + head.bias if head.use_bias else z

        return dense_logits, f"pre-softmax output of Dense layer {head.name!r}"
    return (
        lambda x, training=False: features(x, training=training)
    ), f"input of softmax layer {head.name!r}"
