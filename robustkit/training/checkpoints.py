"""Per-epoch checkpoints of a training run (``tf.train.CheckpointManager``) and resuming.

A checkpoint holds every object a resumed run needs to continue exactly: the model, the
optimizer, the step's random generator, the trainer state (epoch, history) and the guards.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from robustkit.errors import InputError, OutputExistsError

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3


class TrainingCheckpoints:
    """The checkpoints of one run in ``directory``.

    Args:
        directory: where checkpoints are written (created when missing).
        objects: name -> trackable (``tf.Module``, Keras model or optimizer, generator), as
            for ``tf.train.Checkpoint(**objects)``.
        keep: how many of the latest checkpoints to keep.
    """

    def __init__(
        self, directory: str, objects: dict[str, object], keep: int = KEEP_CHECKPOINTS
    ) -> None:
        self.directory = directory
        self._checkpoint = tf.train.Checkpoint(**objects)
        self._manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint (None when there is none)."""
        return self._manager.latest_checkpoint

    def restore(self, resume: bool) -> bool:
        """Load the newest checkpoint into the objects when resuming; True if one was loaded.

        Raises:
            OutputExistsError: checkpoints exist but ``resume`` is False (they are never
                overwritten by a new run).
            InputError: the checkpoint does not match these objects.
        """
        if self.latest is None:
            if resume:
                logger.info("No checkpoint in %s; starting from epoch 1.", self.directory)
            return False
        if not resume:
            raise OutputExistsError(
                f"{self.directory} already holds checkpoints ({self.latest}). Pass "
                "resume=True to continue that run, or choose an empty directory."
            )
        try:
            self._checkpoint.restore(self.latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise InputError(
                f"The checkpoint {self.latest} does not match this model and optimizer: {error}"
            ) from error
        logger.info("Resuming from %s.", self.latest)
        return True

    def save(self, epoch: int) -> str:
        """Write the checkpoint of the run after ``epoch`` epochs; its path prefix."""
        return self._manager.save(checkpoint_number=epoch)
