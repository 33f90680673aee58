"""evaluate() on two real worker processes (MultiWorkerMirroredStrategy, TF_CONFIG on free
127.0.0.1 ports, one CPU thread each): the report of one process alone, array for array; and
workers given different data fail together, naming the odd one, instead of mixing results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from worker_processes import Processes, free_ports, run_cluster, tf_config

WORKER = Path(__file__).with_name("eval_multiworker_worker.py")
RUN_SECONDS = 300


@pytest.mark.slow
def test_two_workers_give_the_report_of_one_process(tmp_path: Path) -> None:
    out = ["--out-dir", str(tmp_path)]
    alone, workers = run_cluster(WORKER, out, reference_args=out, timeout=RUN_SECONDS)
    one = dict(np.load(tmp_path / "alone.npz"))
    assert (one["broken_by"] >= 0).sum() > 0 and one["robust"].sum() > 0  # something to shard
    for index, summary in enumerate(workers):
        assert summary["replicas"] == 2
        other = np.load(tmp_path / f"worker-{index}.npz")
        assert sorted(other.files) == sorted(one)
        # every per-example record and adversarial image, byte for byte
        assert [name for name in one if not np.array_equal(one[name], other[name])] == []
        assert summary["checks"] == alone["checks"]
        assert summary["verification"] == alone["verification"]


@pytest.mark.slow
def test_workers_given_different_labels_fail_naming_the_odd_one(tmp_path: Path) -> None:
    ports = free_ports(2)
    args = ["--out-dir", str(tmp_path), "--mislabel-on-worker", "1"]
    with Processes() as processes:
        for index in range(2):
            processes.start(f"worker {index}", WORKER, *args, TF_CONFIG=tf_config(ports, index))
        finished = [processes.wait(f"worker {index}", RUN_SECONDS) for index in range(2)]
    named = (
        f"The workers of the cluster would attack different examples: worker 1 at "
        f"127.0.0.1:{ports[1]} would attack other images, labels, targets or keys than worker 0"
    )
    for worker in finished:
        assert worker.returncode != 0
        assert named in worker.stderr, worker.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []  # neither wrote a report
