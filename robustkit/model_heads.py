"""Logits of a model whose head ends in softmax: the pre-softmax output, without cloning.

The graph is read backwards from the model's output. A final softmax (a Dense or Activation
layer with softmax activation, a Softmax layer or ``keras.ops.softmax``) is unwrapped to a
functional view ending at its input (same layers, same variables), followed by the head's
affine part for a softmax Dense. When the output comes from a nested model (Sequential or
functional, at any depth: ``keras.Sequential([Rescaling(...), keras.applications.ResNet50()])``,
``keras.Model(image, application(preprocess(image)))``), the layers before it run as a view of
the outer graph, then that model's logits. Nothing of the user's model is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import tensorflow as tf

LogitsFunction = Callable[..., tf.Tensor]


class LogitsView(NamedTuple):
    """function: ``(x, training) -> [N, K]`` on model-input units, sharing the model's
    variables; source: where its values come from, in words; missing: why no pre-softmax output
    was found (None when one was), for the warning given if the output is probabilities."""

    function: LogitsFunction
    source: str
    missing: str | None


def _is_softmax(activation: Any) -> bool:
    return getattr(activation, "__name__", None) == "softmax"


def _is_softmax_operation(operation: Any) -> bool:
    """A softmax over the class axis of [N, K]: ``keras.ops.softmax`` (or a Softmax layer)."""
    return type(operation).__name__ == "Softmax" and getattr(operation, "axis", None) in (-1, 1)


def _output_node(model: keras.Model) -> Any:
    """The graph node (Keras' ``Node``: operation, input tensors, call arguments) that computes
    the model's single output."""
    history = model.outputs[0]._keras_history
    return history.operation._inbound_nodes[history.node_index]


def _graph_view(model: keras.Model, tensor: Any) -> LogitsFunction:
    """``(x, training) -> tensor``: the part of the model's graph from its input to ``tensor``
    (one of its symbolic tensors), as a functional view on the same layers."""
    if tensor is model.inputs[0]:
        return lambda x, training=False: x
    view = keras.Model(model.inputs[0], tensor, name=f"{model.name}_view")
    return lambda x, training=False: view(x, training=training)


def _softmax_input(model: keras.Model, node: Any) -> LogitsView | None:
    """The logits view when ``node`` is a softmax head, else None."""
    head, inputs = node.operation, node.input_tensors
    if len(inputs) != 1 or node.arguments.kwargs.get("mask") is not None:
        return None
    features = _graph_view(model, inputs[0])
    if isinstance(head, keras.layers.Dense) and _is_softmax(head.activation):

        def dense_logits(x: tf.Tensor, training: bool = False) -> tf.Tensor:
            z = keras.ops.matmul(features(x, training=training), head.kernel)
            return z + head.bias if head.use_bias else z

        return LogitsView(dense_logits, f"pre-softmax output of Dense layer {head.name!r}", None)
    if isinstance(head, keras.layers.Activation) and _is_softmax(head.activation):
        return LogitsView(features, f"input of softmax layer {head.name!r}", None)
    if _is_softmax_operation(head):
        kind = "layer" if isinstance(head, keras.layers.Layer) else "operation"
        return LogitsView(features, f"input of softmax {kind} {head.name!r}", None)
    return None


def _pre_softmax(model: Any) -> LogitsView | str:
    """The model's pre-softmax logits view, or why none can be found."""
    if not isinstance(model, keras.Model):
        return "it is a plain callable, not a Keras model"
    if not getattr(model, "inputs", None):
        return (
            f"model {model.name!r} has no graph to read (a subclassed model, or a Sequential "
            "that is not built); return logits from its call(), or build it with keras.Input"
        )
    node = _output_node(model)
    head = _softmax_input(model, node)
    if head is not None:
        return head
    nested = node.operation
    if not isinstance(nested, keras.Model):
        return (
            f"its output comes from {type(nested).__name__} {nested.name!r}, not from a softmax "
            "(a Dense or Activation layer with softmax activation, a Softmax layer, "
            "keras.ops.softmax) or a nested model ending in one"
        )
    if len(node.input_tensors) != 1:
        return f"nested model {nested.name!r} is called on several tensors"
    inner = _pre_softmax(nested)
    if isinstance(inner, str):
        return f"in nested model {nested.name!r}, {inner}"
    leading = _graph_view(model, node.input_tensors[0])
    fixed = node.arguments.kwargs.get("training")  # as in base(x, training=False)

    def nested_logits(x: tf.Tensor, training: bool = False) -> tf.Tensor:
        phase = training if fixed is None else fixed
        return inner.function(leading(x, training=training), training=phase)

    return LogitsView(nested_logits, f"{inner.source} in nested model {nested.name!r}", None)


def logits_view(model: Any) -> LogitsView:
    """The model's pre-softmax logits when its output is a softmax robustkit can see past,
    else its output as it is, with the reason in ``missing``."""
    found = _pre_softmax(model)
    if isinstance(found, LogitsView):
        return found
    return LogitsView(lambda x, training=False: model(x, training=training), "model output", found)
