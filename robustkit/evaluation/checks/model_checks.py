"""Checks 1-3 measure the model itself on the check subsample: does it hand the attacks logits,
do its input gradients exist, is its forward pass deterministic."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from robustkit.evaluation.checks.context import CheckContext
from robustkit.evaluation.checks.measurements import (
    DeterminismMeasurements,
    GradientMeasurements,
    ProbabilityMeasurements,
)
from robustkit.gradients import input_gradients
from robustkit.models import looks_like_probabilities
from robustkit.tracing import compile_with_signature


def measure_probabilities(context: CheckContext) -> ProbabilityMeasurements:
    """1. Attacks must run on logits, not on (log-)probabilities: reads the raw model outputs
    and the values attacked as logits of the subsample."""
    data = context.data
    classifier = data.classifier
    inputs = classifier.preprocessing(tf.constant(data.x[data.subsample]))
    try:
        raw = classifier.model(inputs, training=False)
    except TypeError:  # a plain callable without a training argument
        raw = classifier.model(inputs)
    logits = data.clean_logits[data.subsample]
    return ProbabilityMeasurements(
        subsample=len(data.subsample),
        logits_source=classifier.logits_source,
        raw_outputs_are_probabilities=looks_like_probabilities(np.asarray(raw)),
        attacked_values_are_probabilities=looks_like_probabilities(logits),
        saturated_share=float(np.mean(tf.nn.softmax(logits).numpy().max(axis=1) == 1.0)),
        logits_unrecoverable=classifier.uses_log_probabilities,
    )


def measure_zero_gradients(context: CheckContext) -> GradientMeasurements:
    """2. Zero input gradients mean the attacks have nothing to follow (masking): the largest
    gradient entry of the margin and cross-entropy losses on each subsample example."""
    data = context.data
    classifier = data.classifier
    signature = [
        tf.TensorSpec((None, *classifier.input_shape), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    ]

    def gradient_sizes(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        sizes = []
        for loss in ("margin", "ce"):
            flat = tf.reshape(
                input_gradients(classifier, x, y, loss=loss).gradient, (tf.shape(x)[0], -1)
            )
            sizes += [
                tf.reduce_max(tf.abs(flat), axis=1),
                tf.reduce_all(tf.math.is_finite(flat), axis=1),
            ]
        return tuple(sizes)

    compiled_sizes = compile_with_signature(gradient_sizes, signature)
    idx, size = data.subsample, data.batch_size
    parts = [
        [
            t.numpy()
            for t in compiled_sizes(
                data.x[idx[i : i + size]], data.y[idx[i : i + size]].astype(np.int32)
            )
        ]
        for i in range(0, len(idx), size)
    ]
    margin_size, margin_finite, ce_size, ce_finite = (
        np.concatenate(p) for p in zip(*parts, strict=True)
    )
    finite = margin_finite & ce_finite
    return GradientMeasurements(
        subsample=len(idx),
        zero_margin_gradient_share=float(np.mean(finite & (margin_size == 0))),
        zero_cross_entropy_gradient_share=float(np.mean(finite & (ce_size == 0))),
        non_finite_gradient_share=float(np.mean(~finite)),
    )


def measure_nondeterminism(context: CheckContext) -> DeterminismMeasurements:
    """3. The same input must give the same logits every time: the clean pass against two more
    (batched, then one example at a time), and the suite's re-check of its adversarials."""
    data = context.data
    x = data.x[data.subsample]
    passes = [
        data.clean_logits[data.subsample],
        data.classifier.predict_logits(x, data.batch_size),
        data.classifier.predict_logits(x, 1),
    ]
    scale = 1.0 + float(np.max(np.abs(passes[0]))) if len(x) else 1.0
    noise = max(float(np.max(np.abs(other - passes[0]), initial=0.0)) for other in passes[1:])
    flips = sum(np.sum(other.argmax(1) != passes[0].argmax(1)) for other in passes[1:])
    verification = context.suite.verification
    return DeterminismMeasurements(
        subsample=len(x),
        relative_logit_change=noise / scale,
        prediction_changes=int(flips),
        adversarials_not_reproduced=verification["disagreements"],
        adversarials_rechecked=verification["rechecked"],
    )
