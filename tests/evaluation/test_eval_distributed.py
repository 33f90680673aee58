"""Scale-out: sharding chunks over two logical CPU replicas changes nothing in the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("eval_distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def test_two_replicas_give_the_report_of_one_device() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["broken"] > 0 and result["robust"] > 0  # a case with something to shard
    assert result["differing_arrays"] == []  # images and every per-example record
    assert result["checks_equal"] and result["verification_equal"]
