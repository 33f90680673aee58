"""The trainer under MirroredStrategy on two logical CPUs equals one device, validation (run
by robustkit.evaluation over both replicas) included."""

from __future__ import annotations

from pathlib import Path

WORKER = Path(__file__).with_name("training_distributed_worker.py")


def test_two_replicas_give_the_weights_and_metrics_of_one_device(run_fresh) -> None:
    report = run_fresh(WORKER)
    assert report["replicas"] == 2
    for optimizer in ("sgd", "clipped_noisy"):
        result = report[optimizer]
        assert result["validation_replicas"] == 2, optimizer  # validation ran on both replicas
        assert result["weight_change"] > 0.05, optimizer  # training moved the weights...
        assert result["weight_difference"] < 1e-5, optimizer  # ...alike on one and two devices
        for name, difference in result["metric_difference"].items():
            assert difference < 1e-5, (optimizer, name)
