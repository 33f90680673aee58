"""Transformed under tf.distribute.MirroredStrategy on two logical CPU devices."""

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("opt_mirrored_run.py")


@pytest.mark.slow  # a fresh TensorFlow process: 10-30 s on 2 cores
def test_two_replicas_end_identical_and_equal_to_one_device(run_fresh) -> None:
    report = run_fresh(SCRIPT)
    assert report["replicas"] == [2, 2, 2, 2]
    assert report["replicas_identical"]
    # Same gradients summed over replicas, same clip, same noise: the single-device run, up to
    # the order of float additions.
    assert report["max_difference_to_single_device"] < 1e-6
    assert report["frozen_count"] > 0 and report["frozen_bit_identical"]
    assert report["iterations"] == [8, 8]
    assert abs(report["noise_std"] - 0.01) < 1e-7
    # A stateful chain: every replica computes and stores the same state, the single device's.
    assert report["stateful_replicas_identical"]
    assert report["stateful_state_count"] == 2 + 4  # quantile window and count, 4 remainders
    assert report["quantile_count"] == 8
    assert report["stateful_max_difference_to_single_device"] < 1e-6
    assert report["stateful_state_max_difference_to_single_device"] < 1e-5
