"""Paths leading out of IMAGES or --out, through the real command: a labels row naming ../x or an
absolute path, links to files and folders elsewhere, names with '..', an --out that is a link
into IMAGES or holds a link leading out. A watched run (every file access recorded by an audit
hook, tests/cli/watch_files.py) reads nothing outside IMAGES but the files given, and writes
nothing outside --out."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import class_tree, invoke, report, save, tiny_cnn, write_images

WATCH = Path(__file__).with_name("watch_files.py")
FAST = ("--steps", "2", "--eps", "8/255")


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root (links not followed)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def watched_run(tmp_path: Path, *args: object) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``robustkit ARGS`` in a subprocess; its result and its file accesses."""
    log = tmp_path / "accesses.jsonl"
    system_tmp = tmp_path / "system-tmp"  # TensorFlow's autograph writes its files here
    system_tmp.mkdir()
    done = subprocess.run(
        [sys.executable, str(WATCH), str(log), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TMPDIR": str(system_tmp)},
    )
    accesses = [json.loads(line) for line in log.read_text().splitlines()]
    return done, accesses


def inside(path: str, *folders: Path) -> bool:
    return any(Path(path) == folder or Path(path).is_relative_to(folder) for folder in folders)


def test_nothing_outside_images_is_read_and_nothing_outside_out_is_written(tmp_path):
    model = save(tiny_cnn(1), tmp_path / "model.keras")
    images = tmp_path / "images"
    class_tree(images)
    write_images(images, ["ant/a..b.png"], seed=3)
    write_images(tmp_path, ["outside.png", "elsewhere/secret.png"], seed=4)
    (images / "ant" / "link.png").symlink_to(tmp_path / "outside.png")
    (images / "dog").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "ant/0.png,0\nant/1.png,0\nant/a..b.png,0\nbee/0.png,1\nbee/1.png,1\ncat/0.png,2\n"
        f"cat/1.png,2\n../outside.png,1\n{tmp_path / 'elsewhere' / 'secret.png'},2\n"
        "ant/../../elsewhere/secret.png,0\n"
    )
    before = tree_digest(tmp_path)
    out = tmp_path / "out"

    done, accesses = watched_run(
        tmp_path, "attack", model, images, *FAST, "--labels", labels, "--out", out
    )
    assert done.returncode == 0, done.stderr
    rows = {row["path"]: row for row in report(out)["images"]}
    outside_row = "named in labels.csv but outside the image folder; not read"
    assert {path: row["reason"] for path, row in rows.items() if row["status"] == "skipped"} == {
        "../outside.png": outside_row,
        str(tmp_path / "elsewhere" / "secret.png"): outside_row,
        "../elsewhere/secret.png": outside_row,
        "ant/link.png": "symbolic link to a file outside the image folder; not read",
        "dog": "symbolic link to a folder; not followed",
    }
    assert rows["ant/a..b.png"]["output"] == "ant/a..b.png" and (out / "ant" / "a..b.png").is_file()

    system_tmp = tmp_path / "system-tmp"
    mine = [
        a for a in accesses if inside(a["path"], tmp_path) and not inside(a["path"], system_tmp)
    ]
    reads = {a["path"] for a in mine if not a["write"]}
    writes = {a["path"] for a in mine if a["write"]}
    assert reads, "the watcher saw no reads"
    allowed_reads = (images, out, Path(model), labels)
    assert [path for path in reads if not inside(path, *allowed_reads)] == []
    assert not any(inside(path, tmp_path / "elsewhere", tmp_path / "outside.png") for path in reads)
    assert [path for path in writes if not inside(path, out)] == []
    elsewhere = [a["path"] for a in accesses if a["write"] and not inside(a["path"], tmp_path)]
    assert set(elsewhere) <= {"/dev/null"}
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith(("out/", "system-tmp/"))} == {
        k: v for k, v in before.items()
    } | {"accesses.jsonl": after["accesses.jsonl"]}


@pytest.fixture
def model(tmp_path):
    return save(tiny_cnn(1), tmp_path / "model.keras")


def test_an_out_that_is_a_link_into_images_is_refused(tmp_path, model):
    images = tmp_path / "images"
    class_tree(images)
    (tmp_path / "out").symlink_to(images / "ant", target_is_directory=True)
    before = tree_digest(images)
    result = invoke(model, images, *FAST, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: The output folder {tmp_path / 'out'} is inside the input folder {images}; "
        "choose a folder outside it (outputs would be mixed with inputs and read back as images "
        "next time)."
    ]
    assert tree_digest(images) == before and sorted(os.listdir(images / "ant")) == [
        "0.png",
        "1.png",
    ]


def test_a_link_inside_out_leading_elsewhere_is_refused(tmp_path, model):
    images = tmp_path / "images"
    class_tree(images)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "bee").symlink_to(elsewhere, target_is_directory=True)
    result = invoke(model, images, *FAST, "--out", out)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: The output {out / 'bee' / '0.png'} would be written outside {out}: {out / 'bee'} "
        "is a symbolic link leading elsewhere. Remove the link or choose another output folder."
    ]
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(out)) == ["bee"]
