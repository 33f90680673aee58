"""Evaluates the sharded case as one task of a MultiWorkerMirroredStrategy cluster (``TF_CONFIG``
set) or alone without a strategy (no ``TF_CONFIG``); one CPU thread either way.

Saves the report's arrays (per-example records and images included) to ``OUT_DIR/<name>.npz``
(name: ``alone`` or ``worker-<index>``) and prints a JSON object with the checks' verdicts and
details, the verification counts and the replicas. ``--mislabel-on-worker N`` changes one label
on worker N only, so the workers disagree.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from eval_helpers import CLASSES, sharded_case, sharded_report

COLLECTIVE_TIMEOUT = 120.0  # seconds a collective waits for a peer that hangs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--mislabel-on-worker", type=int)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    name, task, strategy = "alone", None, None
    if "TF_CONFIG" in os.environ:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=COLLECTIVE_TIMEOUT
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        task = int(strategy.cluster_resolver.task_id)
        name = f"worker-{task}"
    classifier, x, y = sharded_case()
    if task is not None and task == args.mislabel_on_worker:
        y[-1] = (y[-1] + 1) % CLASSES
    report = sharded_report(classifier, x, y, strategy)
    np.savez(args.out_dir / f"{name}.npz", **report.to_numpy())
    document = report.to_dict()
    summary = {
        "replicas": report.environment["replicas"],
        "checks": [[check["verdict"], check["details"]] for check in document["checks"]],
        "verification": document["verification"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
