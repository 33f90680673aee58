"""``robustkit evaluate``: .npz and labelled image folders, reports on disk, the summary table,
progress bars per attack and eps, and the shared refusals and exit codes."""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from eval_helpers import quadrant_data, trained_mlp
from PIL import Image

from robustkit.evaluation import ProgressEvent, RobustnessReport
from robustkit_cli.common import EXIT_INPUT, EXIT_OK, Console
from robustkit_cli.evaluate import ProgressBars
from robustkit_cli.main import main

FILES = ("report.json", "report.md", "robustness_curve.png")


def invoke(*args: object):
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A saved model, an .npz (uint8 codes, no channel axis) and a class-folder tree."""
    root = tmp_path_factory.mktemp("evaluate")
    model = root / "model.keras"
    trained_mlp().save(model)
    x, y = quadrant_data(12, seed=8)
    codes = np.rint(x[..., 0] * 255).astype(np.uint8)
    np.savez(root / "data.npz", x=codes, y=y)
    np.savez(root / "unlabelled.npz", x=codes)
    for i, (image, label) in enumerate(zip(codes, y, strict=True)):
        folder = root / "images" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{i:02d}.png")
    (root / "images" / "class0" / "broken.png").write_bytes(b"not a png")
    (root / "bare").mkdir()
    Image.fromarray(codes[0], "L").save(root / "bare" / "a.png")
    return {"root": root, "model": model, "npz": root / "data.npz", "images": root / "images"}


def test_npz_run_writes_the_reports_and_prints_the_table(inputs, tmp_path) -> None:
    out = tmp_path / "out"
    result = invoke(
        inputs["model"], inputs["npz"], "--eps", "0.3", "--suite", "quick", "--checks", "none",
        "--out", out, "--save-adversarial",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert all((out / name).is_file() for name in FILES)
    report = RobustnessReport.from_json((out / "report.json").read_text())
    assert report.num_examples == 12 and report.suite == "quick"
    assert report.robust_accuracy == [0.0] and report.clean_accuracy == 1.0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("linf robust accuracy, quick suite (cascade), 12 examples")
    assert any(line.split() == ["worst", "case", "0.0%"] for line in lines)
    assert any(line.split() == ["after", "apgd-ce", "0.0%"] for line in lines)
    with np.load(out / "adversarial.npz") as saved:
        assert saved["x_adv"].shape == (1, 12, 8, 8, 1)
        np.testing.assert_array_equal(saved["y"], quadrant_data(12, seed=8)[1])
    # a second run refuses to overwrite, and says how to
    again = invoke(inputs["model"], inputs["npz"], "--eps", "0.3", "--out", out)
    assert again.exit_code == EXIT_INPUT and "--overwrite" in again.stderr


def test_image_folder_run_skips_unreadable_files_and_prints_json(inputs, tmp_path) -> None:
    out = tmp_path / "out"
    result = invoke(
        inputs["model"], inputs["images"], "--eps", "0.3", "--suite", "quick", "--checks", "1",
        "--check-samples", "5", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == EXIT_OK, result.output
    assert "skipped class0/broken.png" in result.stderr
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "report.json").read_text())
    assert printed["num_examples"] == 12
    assert [check["verdict"] for check in printed["checks"]] == ["pass"] + ["not run"] * 8
    assert printed["settings"]["check_samples"] == 5


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{model}", "{root}/bare", "--eps", "0.1"], "labels"),
        (["{model}", "{root}/unlabelled.npz", "--eps", "0.1"], "'y'"),
        (["{root}/missing.keras", "{npz}", "--eps", "0.1"], "not found"),
        (["{model}", "{images}", "--eps", "0.1", "--out", "{images}/out"], "inside the input"),
        (["{model}", "{npz}", "--eps", "0.1", "--checks", "7,bogus"], "Unknown check"),
        (["{model}", "{npz}", "--eps", "0.1,0.1"], "distinct"),
    ],
)
def test_refusals_exit_with_code_2(inputs, tmp_path, arguments, message) -> None:
    paths = {name: str(path) for name, path in inputs.items()}
    args = [argument.format(**paths) for argument in arguments]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = invoke(*args)
    assert result.exit_code == EXIT_INPUT, result.output
    assert message in result.stderr
    assert not (tmp_path / "out" / "report.json").exists()


class RecordingConsole(Console):
    """Records the bars a command opens and how far each advanced."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[list] = []

    @contextlib.contextmanager
    def progress(self, total, label):
        bar = [label, total, 0]
        self.bars.append(bar)
        yield lambda n: bar.__setitem__(2, bar[2] + n)


def test_one_progress_bar_per_attack_pass_eps_and_check() -> None:
    console = RecordingConsole()
    bars = ProgressBars(console)
    events = [
        ProgressEvent("attack", "pgd-ce", 0.1, 4, 10),
        ProgressEvent("attack", "pgd-ce", 0.1, 10, 10),
        ProgressEvent("attack", "pgd-targeted", 0.1, 3, 3, target=1, targets=2),
        ProgressEvent("attack", "pgd-targeted", 0.1, 2, 2, target=2, targets=2),
        ProgressEvent("attack", "pgd-ce", 0.3, 10, 10),
        ProgressEvent("check", "large_eps", 0.5, 5, 5),
    ]
    for event in events:
        bars(event)
    bars.close()
    assert [(label.split(), total, done) for label, total, done in console.bars] == [
        (["pgd-ce", "eps", "0.1"], 10, 10),
        (["pgd-targeted", "eps", "0.1", "target", "1/2"], 3, 3),
        (["pgd-targeted", "eps", "0.1", "target", "2/2"], 2, 2),
        (["pgd-ce", "eps", "0.3"], 10, 10),
        (["large_eps", "eps", "0.5"], 5, 5),
    ]
