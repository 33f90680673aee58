"""Checks that a model can be adversarially trained, run before any step."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.models import Classifier

# Output activations that still give logits or probabilities; anything else (sigmoid, relu, ...)
# squashes the scores and cannot be trained or attacked as a classifier.
CLASSIFIER_OUTPUTS = (None, "linear", "softmax", "log_softmax")
PROBE_COUNT = 64  # training images whose logits must be finite before training starts


def trainable_classifier(model: Any) -> Classifier:
    """``model`` (a Keras model, or a Classifier wrapping one) as a Classifier whose Keras
    model has trainable variables and an output layer that gives logits or softmax."""
    if isinstance(model, Classifier):
        classifier = model
    elif isinstance(model, keras.Model):
        classifier = Classifier(model)
    else:
        raise InputError(
            f"model must be a Keras model or a robustkit Classifier, got {type(model).__name__}."
        )
    if not isinstance(classifier.model, keras.Model):
        raise InputError("The classifier must wrap a Keras model for its weights to be trained.")
    _check_output_activation(classifier)
    if not classifier.model.trainable_variables:
        raise InputError("The model has no trainable variables; there is nothing to train.")
    return classifier


def _check_output_activation(classifier: Classifier) -> None:
    """Raise when the model's last layer squashes its outputs (neither logits nor softmax)."""
    layers = getattr(classifier.model, "layers", None)
    if not layers:
        return
    activation = getattr(layers[-1], "activation", None)
    name = getattr(activation, "__name__", None)
    if activation is not None and name not in CLASSIFIER_OUTPUTS:
        raise InputError(
            f"The model's last layer {layers[-1].name!r} applies {name!r}, so its outputs are "
            "neither logits nor softmax probabilities. Remove that activation (train on logits)."
        )


def check_outputs(classifier: Classifier, x: np.ndarray) -> None:
    """Fail before training when the model's outputs on training images x [n, H, W, C] are
    unusable: fewer than two classes, or NaN / Inf logits."""
    if classifier.num_classes < 2:
        raise InputError(
            f"The model has {classifier.num_classes} output; a classifier needs one logit per "
            "class (two or more)."
        )
    logits = classifier.logits(tf.convert_to_tensor(x))
    if not np.all(np.isfinite(logits.numpy())):
        raise InputError(
            "The model outputs NaN or Inf on the first training images; check the model's "
            "weights and the classifier's preprocessing."
        )
