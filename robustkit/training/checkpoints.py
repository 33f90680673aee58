"""Per-epoch checkpoints of a training run (``tf.train.CheckpointManager``) and resuming.

A checkpoint holds every object a resumed run needs to continue exactly: the model, the
optimizer, the step's random generator, the trainer state (epoch, history) and the guards.

Under a multi-worker strategy every worker saves (saving may need collective operations), but
only the chief writes to the checkpoint directory; the others write to a temporary folder inside
it and remove it (:mod:`robustkit.cluster`). Every worker restores from the chief's directory,
so it must be a path all of them read: a shared filesystem.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf

from robustkit import cluster
from robustkit.errors import InputError, OutputExistsError

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = 3
NO_CHECKPOINT = -1  # the number the workers compare when a directory holds none


class TrainingCheckpoints:
    """The checkpoints of one run in ``directory``.

    Args:
        directory: where checkpoints are written (created when missing).
        objects: name -> trackable (``tf.Module``, Keras model or optimizer, generator), as
            for ``tf.train.Checkpoint(**objects)``.
        keep: how many of the latest checkpoints to keep.
        strategy: the ``tf.distribute`` strategy the objects live in (None: no strategy);
            under a multi-worker one only the chief writes to ``directory``.
    """

    def __init__(
        self,
        directory: str,
        objects: dict[str, object],
        keep: int = KEEP_CHECKPOINTS,
        strategy: Any = None,
    ) -> None:
        self.directory = directory
        self.strategy = strategy
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
            InputError: the checkpoint does not match these objects, or the workers of a
                cluster do not see the same newest checkpoint.
        """
        if cluster.is_multi_worker(self.strategy):
            self._check_workers_see_the_same()
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
        """Write the checkpoint of the run after ``epoch`` epochs; its path prefix in
        ``directory`` (a worker that is not the chief writes its copy elsewhere and drops it)."""
        if cluster.writes_outputs(self.strategy):
            return self._manager.save(checkpoint_number=epoch)
        scratch = cluster.write_directory(self.directory, self.strategy)
        if tf.io.gfile.exists(scratch):  # left by a worker killed while saving
            tf.io.gfile.rmtree(scratch)
        written = tf.train.CheckpointManager(self._checkpoint, scratch, max_to_keep=1).save(
            checkpoint_number=epoch
        )
        tf.io.gfile.rmtree(scratch)
        return os.path.join(self.directory, os.path.basename(written))

    def _check_workers_see_the_same(self) -> None:
        """Raise unless every worker sees the same newest checkpoint in ``directory``."""
        number = NO_CHECKPOINT if self.latest is None else int(self.latest.rsplit("-", 1)[1])
        seen = cluster.rows_by_task(self.strategy, [number])
        if len(set(seen.values())) > 1:
            found = ", ".join(
                f"{task} sees {'none' if row[0] == NO_CHECKPOINT else f'ckpt-{row[0]}'}"
                for task, row in seen.items()
            )
            raise InputError(
                f"The workers see different checkpoints in {self.directory} ({found}). "
                "checkpoint_dir must be one folder every worker reads, on a filesystem they "
                "share (e.g. NFS or gs://); only the chief writes to it."
            )


def restart_advice(directory: str | None) -> str:
    """What to do once a worker is lost: restart every worker, resuming from ``directory``."""
    if directory is None:
        return (
            "restart all workers with the same TF_CONFIG; without a checkpoint_dir training "
            "starts again from the first epoch"
        )
    return (
        "restart all workers with the same TF_CONFIG and resume=True to resume from the last "
        f"checkpoint in {directory}"
    )
