"""Per-epoch TensorBoard scalars through a ``tf.summary`` file writer.

Scalars are written with the core ``tf.summary.write`` op and the scalar plugin's metadata, so
TensorBoard shows them without the ``tensorboard`` package installed where training runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()  # how TensorBoard recognises a scalar summary


class EpochSummaries:
    """Writes each epoch's metrics as TensorBoard scalars into ``log_dir``."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._writer = tf.summary.create_file_writer(log_dir)

    def write(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Every metric of ``logs`` as a scalar at step ``epoch`` (0-based); flushed at once."""
        with self._writer.as_default():
            for name, value in logs.items():
                tf.summary.write(name, tf.constant(value, tf.float32), step=epoch, metadata=SCALAR)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
