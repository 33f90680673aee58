"""Faults with real processes: `robustkit attack`, `saliency` and `evaluate` SIGKILLed at exact
points (tests/cli/kill_at.py: a batch decoded, a temporary file complete but not renamed, just
after a rename, half a journal line), rerun until done; a second process on the same --out; a
read-only and a full output folder. After every kill each file under a final name is complete
(the bytes an uninterrupted run writes), and the finished run's files are byte-identical to an
uninterrupted run's (the reports aside from their timings and resume counts)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import class_tree, save, tiny_cnn
from click.testing import CliRunner

from robustkit.io.files import TEMP_SUFFIX
from robustkit.runs.lock import LOCK_NAME
from robustkit_cli.main import main

KILL_AT = Path(__file__).with_name("kill_at.py")
RUN = "import sys; from robustkit_cli.main import main; main(sys.argv[1:])"
KILLED = -signal.SIGKILL
# a folder run's timing fields: the only summary fields a resumed job may change
PER_RUN = {"seconds", "images_per_second"}
# (kill point, n): what each run of a chain dies at, counted from that run's start
CHAINS = {
    "attack": [("batch", 2), ("before-replace", 3), ("after-replace", 4), ("journal", 1)],
    "saliency": [("before-replace", 3), ("journal", 1)],
    # evaluate writes identity.json, then per chunk its clean logits and one cell per (eps,
    # attack): 2 chunks (9 images, 4 batches of 2 each) x 1 eps x 2 attacks
    "evaluate": [("after-replace", 3), ("before-replace", 2)],
}


def command(kind: str, model: str, images: Path, out: Path) -> list[str]:
    if kind == "attack":
        options = ["--steps", "3", "--eps", "8/255", "--save-perturbation"]
    elif kind == "evaluate":
        options = ["--eps", "0.1", "--suite", "quick", "--checks", "none"]
    else:
        options = ["--method", "smoothgrad", "--samples", "3"]
    return [kind, model, str(images), *options, "--batch-size", "2", "--out", str(out)]


def subprocess_run(args: list[str], kill: tuple[str, int] | None = None) -> subprocess.Popen:
    prefix = [str(KILL_AT), kill[0], str(kill[1])] if kill else ["-c", RUN]
    return subprocess.Popen(
        [sys.executable, *prefix, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def without_run_fields(name: str, report: bytes) -> object:
    """A report without what differs from run to run: timings, and a folder run's counts."""
    if name == "report.md":  # the wall-time line and the cost table's seconds column
        text = re.sub(r"- Wall time: .*", "", report.decode())
        return re.sub(r"\| [0-9.]+ \|$", "|", text, flags=re.MULTILINE)
    data = json.loads(report)
    if "summary" in data:  # a folder run's report
        data["summary"] = {k: v for k, v in data["summary"].items() if k not in PER_RUN}
    else:  # an evaluation's report
        data["timing"] = None
        for outcome in data["outcomes"]:
            outcome["wall_time_s"] = None
    return data


def assert_nothing_partial(out: Path, reference: dict[str, bytes]) -> None:
    """Every file under a final name is one the uninterrupted run wrote, with its bytes."""
    for name, data in files_of(out).items():
        if Path(name).name.startswith("."):
            continue  # temporary files, the journal and the lock: hidden, removed by the rerun
        if name.startswith(".robustkit-evaluate-checkpoint/"):  # whole cells only
            if name.endswith(".npz"):
                with np.load(io.BytesIO(data), allow_pickle=False) as cell:
                    assert cell.files, name
            else:
                assert json.loads(data), name
            continue
        assert not name.startswith("report.") and data == reference[name], name


def assert_same_as(out: Path, reference: dict[str, bytes]) -> None:
    finished = files_of(out)
    assert sorted(finished) == sorted(reference)
    for name, data in reference.items():
        if name in ("report.json", "report.md"):
            assert without_run_fields(name, finished[name]) == without_run_fields(name, data)
        else:
            assert finished[name] == data, name


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    class_tree(root / "images", per_class=3)  # 9 images: 5 batches of 2
    model = save(tiny_cnn(1), root / "model.keras")
    references = {}
    for kind in CHAINS:
        out = root / f"reference-{kind}"
        result = CliRunner().invoke(main, command(kind, model, root / "images", out))
        assert result.exit_code == 0, result.output
        references[kind] = files_of(out)
    return root, model, references


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CHAINS))
def test_killed_at_every_point_then_rerun_gives_the_same_files(setup, tmp_path, kind):
    root, model, references = setup
    out = tmp_path / "out"
    args = command(kind, model, root / "images", out)
    for point in CHAINS[kind]:
        code, _, stderr = finish(subprocess_run(args, kill=point))
        assert code == KILLED, (point, stderr)
        assert_nothing_partial(out, references[kind])
        if point[0] == "before-replace":
            assert list(out.rglob(f"*{TEMP_SUFFIX}")), "the kill left its temporary file"
        if point[0] == "journal":
            (journal,) = out.glob(".robustkit-*-journal.jsonl")
            assert not journal.read_bytes().endswith(b"\n"), "the kill cut a journal line"
    code, _, stderr = finish(subprocess_run(args))
    assert code == 0, stderr
    assert re.search("resuming (an|the) interrupted (run|evaluation)", stderr)
    assert "taking over the lock" in stderr  # every kill left its lock behind
    assert_same_as(out, references[kind])


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_then_takes_over(setup, tmp_path):
    root, model, references = setup
    out = tmp_path / "out"
    args = command("attack", model, root / "images", out)
    first = subprocess_run(args, kill=("pause", 2))
    try:
        assert first.stdout.readline().strip() == "paused"
        second = CliRunner().invoke(main, args)
        assert second.exit_code == 2
        assert second.stderr.strip().splitlines() == [
            f"error: {out} is in use by another robustkit run (pid {first.pid} on "
            f"{os.uname().nodename}). Wait for it to finish or choose another output folder; if "
            f"that process is not a robustkit run, delete {out / LOCK_NAME}."
        ]
    finally:
        first.send_signal(signal.SIGKILL)  # killed from outside, mid-run
        first.communicate(timeout=60)
    assert first.returncode == KILLED
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    resumed = CliRunner().invoke(main, args)
    assert resumed.exit_code == 0, resumed.output
    assert (
        f"warning: taking over the lock of {out} left by pid {first.pid}, which no longer runs"
        in resumed.stderr
    )
    assert_same_as(out, references["attack"])


def tree_digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` (root only); skips the test where mounting is refused."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_output_folder_is_one_error_and_exit_code_1(setup, tmp_path):
    root, model, _ = setup
    before = tree_digest(root / "images")
    with tmpfs(tmp_path / "ro", "ro,size=64k") as folder:
        for out in (folder, folder / "out"):
            result = CliRunner().invoke(main, command("attack", model, root / "images", out))
            assert result.exit_code == 1
            missing = out / LOCK_NAME if out == folder else out
            assert result.stderr.strip().splitlines() == [
                f"error: OSError: [Errno 30] Read-only file system: '{missing}' (rerun with "
                "--debug for the traceback)"
            ]
        assert os.listdir(folder) == []
    assert tree_digest(root / "images") == before


def test_a_full_output_folder_is_one_error_then_the_rerun_finishes(setup, tmp_path):
    root, model, references = setup
    before = tree_digest(root / "images")
    with tmpfs(tmp_path / "small", "size=48k") as folder:  # 12 pages; the run needs 22 files
        out = folder / "out"
        args = command("attack", model, root / "images", out)
        full = CliRunner().invoke(main, args)
        assert full.exit_code == 1
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: OSError: [Errno 28] No space")
        assert f": '{out}/" in lines[0] and lines[0].endswith(
            "' (rerun with --debug for the traceback)"
        )
        assert not list(out.rglob(f"*{TEMP_SUFFIX}")) and not (out / LOCK_NAME).exists()
        assert_nothing_partial(out, references["attack"])
        subprocess.run(["mount", "-o", "remount,size=1m", str(folder)], check=True)
        resumed = CliRunner().invoke(main, args)
        assert resumed.exit_code == 0, resumed.output
        assert_same_as(out, references["attack"])
    assert tree_digest(root / "images") == before
