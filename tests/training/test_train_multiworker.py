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
from worker_processes import Processes, free_ports, run_cluster, tf_config

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
