"""Trainer state that must survive an interruption, and weight snapshots for the guards.

Everything here is trackable (``tf.Variable``s, and the history as checkpointed Python state),
so a ``tf.train.Checkpoint`` saves and restores it together with the model, the optimizer and
the random generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from robustkit.training.history import TrainingHistory


class WeightSnapshot(tf.Module):
    """A copy of a list of variables (model weights, optimizer slots) that can be put back.

    The snapshot holds only the copies (so a checkpoint does not save the originals twice); the
    same list of variables is passed to :meth:`take` and :meth:`put_back`.
    """

    def __init__(self, variables: Sequence[tf.Variable], name: str = "snapshot") -> None:
        super().__init__(name=name)
        self.copies = [
            tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"copy_{i}")
            for i, v in enumerate(variables)
        ]

    def take(self, variables: Sequence[tf.Variable]) -> None:
        """Copy the current values of ``variables`` in."""
        for copy, source in zip(self.copies, variables, strict=True):
            copy.assign(tf.convert_to_tensor(source))

    def put_back(self, variables: Sequence[tf.Variable]) -> None:
        """Write the copied values back into ``variables``."""
        for copy, source in zip(self.copies, variables, strict=True):
            source.assign(copy)


class HistoryText(tf.train.experimental.PythonState):
    """The history as JSON text in a checkpoint. Python state rather than a string variable:
    a multi-worker strategy broadcasts every variable's initial value, which strings cannot be."""

    def __init__(self) -> None:
        self.text = ""

    def serialize(self) -> str:
        return self.text

    def deserialize(self, string_value: bytes) -> None:
        self.text = string_value.decode()


class TrainerState(tf.Module):
    """Checkpointed progress of the loop itself: the next epoch and the history so far (the
    guards keep their own state)."""

    def __init__(self) -> None:
        super().__init__(name="trainer_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.history_json = HistoryText()

    def reset(self) -> None:
        """A fresh run: epoch 0, empty history."""
        self.epoch.assign(0)
        self.store_history(TrainingHistory())

    def history(self) -> TrainingHistory:
        """The history stored with the state (empty for a fresh run)."""
        text = self.history_json.text
        return TrainingHistory.from_json(text) if text else TrainingHistory()

    def store_history(self, history: TrainingHistory) -> None:
        """Keep ``history`` with the state (saved with the next checkpoint)."""
        self.history_json.text = history.to_json()
