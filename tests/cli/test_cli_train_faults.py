"""Faults with real processes: examples/train_robust_mnist.py (a tiny setting: 256 digits, width
2, one warm-up and two TRADES epochs of 3 steps, checkpoints every epoch, --resume) SIGKILLed at
exact points (tests/cli/kill_at.py: mid-epoch after a training step, a checkpoint's files written
but not yet named by the ``checkpoint`` state file, just after a checkpoint was saved, between
the report and the model writes), rerun with the same command until it completes.

After every kill each file under a final name is complete; the finished run's outputs equal an
uninterrupted run's: the JSON report byte for byte but its timings (``seconds``, ``cpu_seconds``
and each epoch's ``seconds``), and the .keras archive member by member: ``model.weights.h5``
byte for byte (so the weights are bit-identical), ``config.json`` but the ``shared_object_id``
values (Python object ids) and ``metadata.json`` but its ``date_saved``. The archive as a whole
differs between any two saves (those fields and the zip entries' times), hence not compared as
bytes. The final checkpoints hold the same tensors as the uninterrupted run's (the stored
history but its timings). No --deterministic: on CPU two processes give the same bits without it.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from kill_at import KILLED
from test_cli_faults import files_of, finish

KILL_AT = Path(__file__).with_name("kill_at.py")
SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_robust_mnist.py"
SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
TINY = [
    "--train-count", "256", "--validation", "64", "--held-out", "64", "--width", "2",
    "--fast-epochs", "1", "--epochs", "2", "--steps", "2", "--batch-size", "64",
    "--out", "out/model.keras", "--checkpoint-dir", "checkpoints", "--resume",
]  # fmt: skip
# What each run of the chain dies at, counted from that run's start, and the epochs it finished
# (the progress lines); 3 steps and one checkpoint per epoch, epochs: warm-up 1/1, then TRADES
# 1/2 and 2/2 (in checkpoints/warm-up and checkpoints/trades).
CHAIN = [
    (("train-step", 2), []),  # mid warm-up epoch, before any checkpoint
    (("checkpoint-files", 2), ["1/1"]),  # TRADES ckpt-1 written, not named by the state file
    (("train-step", 2), []),  # warm-up restored, killed mid TRADES epoch 1
    (("checkpoint-saved", 2), ["1/2"]),  # TRADES ckpt-2 saved: all epochs done, nothing written
    (("after-replace", 1), []),  # resumed past the training: the report written, not the model
]
TIMINGS = ("seconds", "cpu_seconds")


def mnist_folder(root: Path) -> Path:
    """The shared MNIST test set, or random digits in its format where it is missing."""
    if (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        return SHARED_MNIST
    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir()
    for name, magic, shape in (
        ("images-idx3", 2051, (10000, 28, 28)),
        ("labels-idx1", 2049, (10000,)),
    ):
        data = rng.integers(0, 256 if magic == 2051 else 10, shape, dtype=np.uint8)
        header = np.array([magic, *shape], dtype=">u4").tobytes()
        (folder / f"t10k-{name}-ubyte").write_bytes(header + data.tobytes())
    return folder


def run(folder: Path, mnist: Path, kill: tuple[str, int] | None = None) -> tuple[int, str, str]:
    prefix = [str(KILL_AT), kill[0], str(kill[1]), "--script"] if kill else []
    command = [sys.executable, *prefix, str(SCRIPT), "--mnist", str(mnist), *TINY]
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return finish(process)


def epochs_finished(stderr: str) -> list[str]:
    return re.findall(r"^epoch (\d+/\d+) ", stderr, flags=re.MULTILINE)


def report_without_timings(data: bytes) -> dict:
    report = json.loads(data)
    for name in TIMINGS:
        assert isinstance(report.pop(name), float)
    for phase in report["phases"]:
        assert all(s > 0 for s in phase["history"].pop("seconds"))
    return report


def keras_members(data: bytes) -> dict[str, object]:
    """The .keras archive's members, without what differs between two saves of one model."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["metadata.json"])
    assert metadata.pop("date_saved")
    members["metadata.json"] = metadata
    ids: dict[int, int] = {}  # Python object ids, renumbered in order of appearance

    def renumber(match: object) -> object:
        if isinstance(match, dict):
            return {
                key: ids.setdefault(value, len(ids))
                if key == "shared_object_id"
                else renumber(value)
                for key, value in match.items()
            }
        if isinstance(match, list):
            return [renumber(value) for value in match]
        return match

    members["config.json"] = renumber(json.loads(members["config.json"]))
    return members


def assert_outputs_equal(files: dict[str, bytes], reference: dict[str, bytes]) -> None:
    assert sorted(files) == sorted(reference)
    for name, data in files.items():
        if name.endswith(".json"):
            assert report_without_timings(data) == report_without_timings(reference[name])
        else:
            assert keras_members(data) == keras_members(reference[name]), name


def assert_nothing_partial(out: Path, reference: dict[str, bytes]) -> None:
    """Under a final name only files the uninterrupted run wrote, complete; others hidden
    temporary files."""
    if not out.exists():
        return
    finished = {n: d for n, d in files_of(out).items() if not n.startswith(".")}
    assert_outputs_equal(finished, {n: reference[n] for n in finished})


def checkpoint_tensors(directory: Path) -> dict[str, dict[str, object]]:
    """Each checkpoint the state file names: tensor name -> value (the history without its
    timings); every named checkpoint must load."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return {}
    tensors = {}
    for prefix in state.all_model_checkpoint_paths:
        reader = tf.train.load_checkpoint(str(directory / Path(prefix).name))
        values: dict[str, object] = {}
        for key in reader.get_variable_to_shape_map():
            value = reader.get_tensor(key)
            if key.startswith("state/history_json"):
                history = json.loads(value)
                assert history["history"].pop("seconds")
                value = history
            values[key] = value.tolist() if isinstance(value, np.ndarray) else value
        tensors[Path(prefix).name] = values
    return tensors


@pytest.mark.slow
def test_training_killed_at_every_point_then_rerun_gives_the_same_model(tmp_path):
    mnist = mnist_folder(tmp_path)
    straight, chain = tmp_path / "straight", tmp_path / "chain"
    straight.mkdir()
    chain.mkdir()
    code, _, stderr = run(straight, mnist)
    assert code == 0, stderr
    assert epochs_finished(stderr) == ["1/1", "1/2", "2/2"]
    reference = files_of(straight / "out")
    assert sorted(reference) == ["model.json", "model.keras"]
    for point, epochs in CHAIN:
        code, _, stderr = run(chain, mnist, kill=point)
        assert code == KILLED, (point, stderr)
        assert epochs_finished(stderr) == epochs, point
        assert_nothing_partial(chain / "out", reference)
        for phase in ("warm-up", "trades"):
            checkpoint_tensors(chain / "checkpoints" / phase)  # each named one loads
        if point == ("checkpoint-files", 2):
            trades = chain / "checkpoints" / "trades"
            assert (trades / "ckpt-1.index").exists()
            assert tf.train.latest_checkpoint(str(trades)) is None  # written, not named
        if point[0] == "after-replace":
            assert sorted(files_of(chain / "out")) == ["model.json"]
    code, _, stderr = run(chain, mnist)
    assert code == 0, stderr
    assert epochs_finished(stderr) == []  # all from the checkpoints
    assert_outputs_equal(files_of(chain / "out"), reference)
    for phase in ("warm-up", "trades"):
        ours, theirs = chain / "checkpoints" / phase, straight / "checkpoints" / phase
        assert sorted(files_of(ours)) == sorted(files_of(theirs))
        assert checkpoint_tensors(ours) == checkpoint_tensors(theirs)
