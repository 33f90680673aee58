"""The output folder's lock: a second run on the same folder is refused while the first runs (a
real second process), a lock left by a dead process is taken over, nothing is left behind."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from cli_helpers import tiny_cnn, write_images

from robustkit.attacks import FGSM
from robustkit.errors import OutputExistsError
from robustkit.models import Classifier
from robustkit.runs import RunLock, attack_folder
from robustkit.runs.lock import LOCK_NAME

HOLDER = textwrap.dedent(
    """
    import sys, time
    from robustkit.runs.lock import RunLock

    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(300)
    """
)


def test_a_live_run_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, caplog):
    write_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "adv"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = json.loads((out / LOCK_NAME).read_text())
        assert lock["pid"] == holder.pid
        classifier = Classifier(tiny_cnn(1))
        attack = FGSM("linf", 8 / 255, quantize=255)
        with pytest.raises(
            OutputExistsError, match=f"in use by another robustkit run \\(pid {holder.pid} "
        ):
            attack_folder(classifier, tmp_path / "in", out, attack)
        assert os.listdir(out) == [LOCK_NAME]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="robustkit.runs"):
        report = attack_folder(classifier, tmp_path / "in", out, attack)
    assert f"left by pid {holder.pid}, which no longer runs" in caplog.text
    assert report.summary["images_attacked"] == 2
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "report.csv", "report.json"]


def test_the_lock_is_exclusive_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new" / "out"
    with RunLock(out) as lock:
        assert json.loads(lock.path.read_text()) == lock.owner
        with pytest.raises(OutputExistsError, match=f"pid {os.getpid()} "):
            RunLock(out).acquire()
    assert not out.exists()  # created by the lock and left empty: removed again
    out.mkdir(parents=True)
    with pytest.raises(RuntimeError), RunLock(out):
        (out / "result.txt").write_text("kept")
        raise RuntimeError
    assert os.listdir(out) == ["result.txt"]


@pytest.mark.parametrize("content", ["", "not json", '{"pid": "x"}'])
def test_an_unreadable_lock_is_refused_not_taken(tmp_path, content):
    (tmp_path / LOCK_NAME).write_text(content)
    with pytest.raises(OutputExistsError, match="unreadable or still being written"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text() == content


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputExistsError, match="pid 1 on elsewhere"):
        RunLock(tmp_path).acquire()
