"""Scale-out: sharding chunks over two logical CPU replicas changes nothing in the report."""

from pathlib import Path

WORKER = Path(__file__).with_name("eval_distributed_worker.py")


def test_two_replicas_give_the_report_of_one_device(run_fresh) -> None:
    result = run_fresh(WORKER)
    assert result["replicas"] == 2
    assert result["broken"] > 0 and result["robust"] > 0  # a case with something to shard
    assert result["differing_arrays"] == []  # images and every per-example record
    assert result["checks_equal"] and result["verification_equal"]
