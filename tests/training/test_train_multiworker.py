"""The trainer on two real worker processes (MultiWorkerMirroredStrategy, TF_CONFIG on free
127.0.0.1 ports, one CPU thread each) against one process alone with the same seed and global
batch: the same weights and metrics; only the chief writes checkpoints and summaries; a worker
killed mid-epoch stops the run with an error naming it, and restarting both workers resumes
from the last checkpoint to the weights of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from worker_processes import Processes, free_ports, run_cluster, tf_config

from robustkit import cluster
from robustkit.training.checkpoints import restart_advice

WORKER = Path(__file__).with_name("training_multiworker_worker.py")
TOLERANCE = 1e-5  # float32 round-off of sums taken in another order
STARTUP_SECONDS = 240  # until the blocked worker reaches its batch (two TF starts, tracing)
LOST_WORKER_SECONDS = 120  # until the survivor ends once its peer is killed
RUN_SECONDS = 300


def largest_difference(one: list[Any], two: list[Any]) -> float:
    """Largest absolute difference between two lists of weight arrays."""
    return max(float(np.max(np.abs(np.subtract(a, b)))) for a, b in zip(one, two, strict=True))


def metrics(result: dict[str, Any]) -> dict[str, list[float]]:
    """The history of ``result`` but for the epochs' wall times."""
    return {name: values for name, values in result["history"].items() if name != "seconds"}


def assert_same_training(result: dict[str, Any], reference: dict[str, Any]) -> None:
    """``result`` ended with the reference's weights and metrics, within TOLERANCE."""
    assert largest_difference(result["weights"], reference["weights"]) < TOLERANCE
    for name, values in metrics(reference).items():
        assert np.allclose(metrics(result)[name], values, rtol=0, atol=TOLERANCE), name


def checkpoint_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def saved(*epochs: int) -> list[str]:
    """The files a CheckpointManager leaves after saving these epochs."""
    names = ["checkpoint"]
    for epoch in epochs:
        names += [f"ckpt-{epoch}.data-00000-of-00001", f"ckpt-{epoch}.index"]
    return sorted(names)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run alone and one on two workers (checkpoints and summaries on), side by side."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    checkpoints, logs = folder / "checkpoints", folder / "logs"
    reference, workers = run_cluster(
        WORKER,
        ["--checkpoint-dir", str(checkpoints), "--log-dir", str(logs)],
        reference_args=[],
        timeout=RUN_SECONDS,
    )
    return {"reference": reference, "workers": workers, "checkpoints": checkpoints, "logs": logs}


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_only_the_chief_writes(
    uninterrupted: dict[str, Any],
) -> None:
    reference, workers = uninterrupted["reference"], uninterrupted["workers"]
    checkpoints = uninterrupted["checkpoints"]
    assert reference["history"]["loss"][-1] < reference["history"]["loss"][0]  # it trained
    for result in workers:
        assert result["validation_replicas"] == 2  # validation attacked on both workers
        assert_same_training(result, reference)
    # the workers hold the very same bytes: every update came from the same all-reduced sums
    assert workers[0]["weights"] == workers[1]["weights"]
    assert metrics(workers[0]) == metrics(workers[1])
    # every worker saved each epoch, the chief into the directory, worker 1 into a scratch
    # folder inside it that is gone; one event file, the chief's
    assert workers[0]["saved_to"] == [str(checkpoints)] * 3
    assert workers[1]["saved_to"] == [str(checkpoints / "workertemp_1")] * 3
    assert checkpoint_files(checkpoints) == saved(1, 2, 3)
    assert len(list(uninterrupted["logs"].iterdir())) == 1


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_naming_it_and_a_restart_resumes(
    tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    checkpoints, marker = tmp_path / "checkpoints", tmp_path / "worker-1-blocked"
    ports = free_ports(2)
    first = ["--checkpoint-dir", str(checkpoints), "--block-at", "1:1", "--marker", str(marker)]
    with Processes() as processes:
        for index in range(2):
            processes.start(f"worker {index}", WORKER, *first, TF_CONFIG=tf_config(ports, index))
        # worker 1 waits at the start of epoch 2's second batch
        processes.wait_for_file(marker, STARTUP_SECONDS, ["worker 0", "worker 1"])
        processes.kill("worker 1")
        survivor = processes.wait("worker 0", LOST_WORKER_SECONDS)
    assert survivor.returncode != 0
    named = f"WorkerLostError: worker 1 at 127.0.0.1:{ports[1]} stopped responding"
    assert named in survivor.stderr, survivor.stderr[-3000:]
    advice = f"resume=True to resume from the last checkpoint in {checkpoints}"
    assert advice in survivor.stderr, survivor.stderr[-3000:]
    assert checkpoint_files(checkpoints) == saved(1)  # the first epoch's, nothing half-written

    resumed = ["--checkpoint-dir", str(checkpoints), "--resume"]
    with Processes() as processes:  # both workers again, with the same TF_CONFIG
        for index in range(2):
            processes.start(f"worker {index}", WORKER, *resumed, TF_CONFIG=tf_config(ports, index))
        workers = [processes.wait(f"worker {i}", RUN_SECONDS).result() for i in range(2)]
    for result in workers:
        assert_same_training(result, uninterrupted["reference"])
        assert result["saved_to"][0].startswith(str(checkpoints))
        assert len(result["saved_to"]) == 2  # epochs 2 and 3 only: epoch 1 came from ckpt-1
    assert checkpoint_files(checkpoints) == saved(1, 2, 3)


@pytest.mark.slow
def test_workers_that_see_different_checkpoints_refuse_to_start(
    tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    ports = free_ports(2)
    folders = [uninterrupted["checkpoints"], tmp_path / "not-shared"]  # worker 1 sees none
    with Processes() as processes:
        for index, folder in enumerate(folders):
            config = tf_config(ports, index)
            processes.start(
                f"worker {index}",
                WORKER,
                "--checkpoint-dir",
                str(folder),
                "--resume",
                TF_CONFIG=config,
            )
        finished = [processes.wait(f"worker {index}", RUN_SECONDS) for index in range(2)]
    seen = (
        f"(worker 0 at 127.0.0.1:{ports[0]} sees ckpt-3, worker 1 at 127.0.0.1:{ports[1]} sees "
        "none). checkpoint_dir must be one folder every worker reads"
    )
    for worker in finished:
        assert worker.returncode != 0
        assert "InputError: The workers see different checkpoints" in worker.stderr
        assert seen in worker.stderr, worker.stderr[-3000:]
    assert not folders[1].exists()  # nothing written


def two_workers(task: int) -> Any:
    """A stand-in strategy of a cluster of two workers, seen from worker ``task``."""
    spec = tf.train.ClusterSpec({"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type="worker", task_id=task
    )
    extended = type("Extended", (), {"should_checkpoint": task == 0})()
    return type("Strategy", (), {"cluster_resolver": resolver, "extended": extended})()


def test_the_lost_worker_is_named_from_the_task_or_the_address_tensorflow_reports() -> None:
    advice = restart_advice("/shared/ckpt")
    heartbeat = tf.errors.UnavailableError(
        None,
        None,
        "The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:1\nThe tasks have crashed.",
    )
    error = cluster.lost_worker_error(heartbeat, two_workers(0), advice)
    assert str(error) == (
        "worker 1 at 10.0.0.2:2222 stopped responding (TensorFlow reports it unavailable; seen "
        "from worker 0 at 10.0.0.1:2222); restart all workers with the same TF_CONFIG and "
        "resume=True to resume from the last checkpoint in /shared/ckpt."
    )
    refused = tf.errors.UnavailableError(None, None, "ipv4:10.0.0.1:2222: Connection refused")
    error = cluster.lost_worker_error(refused, two_workers(1), restart_advice(None))
    assert str(error).startswith("worker 0 at 10.0.0.1:2222 stopped responding")
    assert str(error).endswith(
        "without a checkpoint_dir training starts again from the first epoch."
    )
    timeout = tf.errors.DeadlineExceededError(None, None, "Collective has timed out.")
    error = cluster.lost_worker_error(timeout, two_workers(0), advice)
    assert str(error).startswith(
        "worker 1 at 10.0.0.2:2222 stopped responding (a collective operation timed out, "
        "without saying which worker;"
    )
    assert cluster.lost_worker_error(heartbeat, None, advice) is None  # no cluster: as it is


def test_only_the_chief_writes_to_the_real_folder() -> None:
    assert cluster.write_directory("/shared/ckpt", two_workers(0)) == "/shared/ckpt"
    assert cluster.write_directory("/shared/ckpt", two_workers(1)) == "/shared/ckpt/workertemp_1"
    assert cluster.write_directory("/shared/ckpt", None) == "/shared/ckpt"
