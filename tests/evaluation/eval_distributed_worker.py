"""Evaluates the same model on one device and under MirroredStrategy on two logical CPUs.

Run as a script (logical devices must be set up before TensorFlow initialises); prints a JSON
object saying which report arrays and numbers differ between the two runs.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from eval_helpers import sharded_case, sharded_report  # noqa: E402

CLASSIFIER, X, Y = sharded_case()


def main() -> None:
    single = sharded_report(CLASSIFIER, X, Y, None)
    multi = sharded_report(CLASSIFIER, X, Y, tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    one, two = single.to_numpy(), multi.to_numpy()
    differing = [name for name in one if not np.array_equal(one[name], two[name])]
    checks_equal = [
        (a.verdict, a.details) == (b.verdict, b.details)
        for a, b in zip(single.checks, multi.checks, strict=True)
    ]
    print(
        json.dumps(
            {
                "replicas": multi.environment["replicas"],
                "differing_arrays": differing,
                "checks_equal": all(checks_equal),
                "verification_equal": single.verification == multi.verification,
                "broken": int((one["broken_by"] >= 0).sum()),
                "robust": int(one["robust"].sum()),
            }
        )
    )


if __name__ == "__main__":
    main()
