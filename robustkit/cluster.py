"""Multi-worker runs (``tf.distribute.MultiWorkerMirroredStrategy``): the cluster's tasks, where
each one writes, checks that the workers agree, and the error that names a lost worker.

Every worker runs the same program, and TensorFlow pairs the workers' collective operations in
the order they are issued, so every worker must take the same branches on the same values.
Only the chief writes to the real output paths; another worker writes what it must (every
worker saves a checkpoint, for saving may need collectives) to a ``workertemp_<id>`` folder
inside the output folder, removed once written (TensorFlow's multi-worker convention).

Without a cluster (no strategy, one device, MirroredStrategy, one worker) this process writes
to the real paths and no error is translated; the gathering functions are for clusters only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import WorkerLostError

WORKER_TEMP_PREFIX = "workertemp_"
COORDINATED_JOBS = ("chief", "worker")  # in the order TensorFlow numbers their replicas
TASK_NAME = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
# what TensorFlow raises when a peer is gone (heartbeats stopped) or a collective timed out
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)


@dataclass(frozen=True)
class Task:
    """One task of the cluster: its job ("chief" or "worker"), index in the job, host:port."""

    job: str
    index: int
    address: str

    def __str__(self) -> str:
        return f"{self.job} {self.index} at {self.address}"


def tasks(strategy: Any) -> list[Task]:
    """The chief and workers of the strategy's cluster, in replica order (none without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return []
    spec = resolver.cluster_spec().as_dict()
    return [
        Task(job, index, address)
        for job in COORDINATED_JOBS
        for index, address in enumerate(spec.get(job, []))
    ]


def is_multi_worker(strategy: Any) -> bool:
    """Whether ``strategy`` spans several worker processes."""
    return len(tasks(strategy)) > 1


def this_task(strategy: Any) -> Task:
    """This process's task (call only under a multi-worker strategy)."""
    resolver = strategy.cluster_resolver
    job, index = resolver.task_type, int(resolver.task_id)
    return next(task for task in tasks(strategy) if (task.job, task.index) == (job, index))


def writes_outputs(strategy: Any) -> bool:
    """Whether this process writes the run's real outputs (reports, checkpoints, summaries):
    always, except on the workers of a multi-worker strategy that are not the chief."""
    return strategy is None or bool(strategy.extended.should_checkpoint)


def write_directory(directory: str, strategy: Any) -> str:
    """Where this process writes what belongs in ``directory``: the directory itself, or on a
    worker that is not the chief its own temporary folder inside it."""
    if writes_outputs(strategy):
        return directory
    return os.path.join(directory, f"{WORKER_TEMP_PREFIX}{this_task(strategy).index}")


def rows_by_task(strategy: Any, row: Sequence[int]) -> dict[Task, tuple[int, ...]]:
    """Each task's ``row`` of integers, gathered from every worker (a collective operation:
    every worker calls it at the same point of the program)."""
    replicas = strategy.experimental_distribute_values_from_function(
        lambda _: tf.constant([list(row)], tf.int64)
    )
    rows = strategy.gather(replicas, axis=0).numpy()
    cluster = tasks(strategy)
    per_task = len(rows) // len(cluster)
    return {task: tuple(int(v) for v in rows[i * per_task]) for i, task in enumerate(cluster)}


def fingerprint(*arrays: np.ndarray) -> int:
    """A 56-bit hash of the arrays' dtypes, shapes and bytes, to compare data across workers."""
    digest = hashlib.blake2b(digest_size=7)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return int.from_bytes(digest.digest(), "little")


def lost_worker_error(
    error: tf.errors.OpError, strategy: Any, advice: str
) -> WorkerLostError | None:
    """A :class:`WorkerLostError` naming the task(s) a multi-worker strategy lost, for the
    unavailable or timed-out collective ``error``; None when not multi-worker."""
    if not is_multi_worker(strategy):
        return None
    me = this_task(strategy)
    others = [task for task in tasks(strategy) if task != me]
    mentioned = {(job, int(index)) for job, index in TASK_NAME.findall(error.message)}
    named = [
        task
        for task in others
        if (task.job, task.index) in mentioned or task.address in error.message
    ]
    if isinstance(error, tf.errors.DeadlineExceededError):
        cause = "a collective operation timed out"
    else:
        cause = "TensorFlow reports it unavailable"
    if named:
        who = " and ".join(map(str, named))
    else:
        who = " or ".join(map(str, others))
        cause += ", without saying which worker"
    return WorkerLostError(f"{who} stopped responding ({cause}; seen from {me}); {advice}.")


@contextlib.contextmanager
def naming_lost_workers(strategy: Any, advice: str) -> Iterator[None]:
    """Raise a :class:`WorkerLostError` (see :func:`lost_worker_error`) in place of the error
    TensorFlow gives when a worker of the cluster is lost inside this block."""
    try:
        yield
    except LOST_WORKER_ERRORS as error:
        translated = lost_worker_error(error, strategy, advice)
        if translated is None:
            raise
        raise translated from error
