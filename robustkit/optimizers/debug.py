"""The opt-in debug record of a ``Transformed`` optimizer: keras Means, summaries, fit logs."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError

# Quantities of the opt-in debug record, one keras.metrics.Mean each.
DEBUG_QUANTITIES = ("grad_norm", "clipped_grad_norm", "noise_std", "update_norm")
# Marks the summaries as TensorBoard scalars; tf.summary.write needs no TensorBoard install.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def write_record(
    metrics: dict[str, keras.metrics.Mean], record: dict[str, tf.Tensor], step: tf.Tensor
) -> None:
    """Add one step's record to the Means, and write it as ``robustkit/<quantity>`` scalars
    when a default summary writer is active (nothing otherwise)."""
    for quantity in DEBUG_QUANTITIES:
        metrics[quantity].update_state(record[quantity])
        tf.summary.write(
            f"robustkit/{quantity}", record[quantity], step=step, metadata=_SCALAR_METADATA
        )


class DebugRecordLogger(keras.callbacks.Callback):
    """Put a :class:`Transformed` optimizer's debug record into ``fit``'s logs.

    Each quantity appears as ``opt_<quantity>`` (e.g. ``opt_grad_norm``): the mean over the
    epoch's steps so far, in the progress bar, in ``History`` and in callbacks after this one.
    The optimizer is the model's, which must be a ``Transformed(..., debug=True)``.
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        if not (getattr(optimizer, "debug", False) and getattr(optimizer, "debug_metrics", None)):
            raise InputError(
                "DebugRecordLogger needs a model compiled with a "
                "robustkit.optimizers.Transformed(..., debug=True) optimizer."
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for metric in self.model.optimizer.debug_metrics.values():
            metric.reset_state()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._add_to(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._add_to(logs)

    def _add_to(self, logs: dict[str, Any] | None) -> None:
        if logs is None:
            return
        for quantity, metric in self.model.optimizer.debug_metrics.items():
            logs[f"opt_{quantity}"] = float(metric.result())
