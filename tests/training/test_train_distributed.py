"""The trainer under MirroredStrategy on two logical CPUs equals one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("training_distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def test_two_replicas_give_the_weights_and_metrics_of_one_device() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, str(WORKER)], capture_output=True, text=True, env=env, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for optimizer in ("sgd", "clipped_noisy"):
        result = report[optimizer]
        assert result["weight_change"] > 0.05, optimizer  # training moved the weights...
        assert result["weight_difference"] < 1e-5, optimizer  # ...alike on one and two devices
        for name, difference in result["metric_difference"].items():
            assert difference < 1e-5, (optimizer, name)
