"""Output safety and notes of folder runs: output planning, the output folder's place."""

import pytest

from robustkit.errors import InputError
from robustkit.runs import check_output_folder, plan_outputs, summarize_notes


def test_plan_outputs_keeps_paths_and_separates_name_clashes():
    plan = plan_outputs(
        ["cat/a.jpg", "cat/a.png", "dog/b.webp", "c.tiff"], [".png", ".perturbation.png"]
    )
    assert plan == {
        "cat/a.jpg": ["cat/a.jpg.png", "cat/a.jpg.perturbation.png"],
        "cat/a.png": ["cat/a.png", "cat/a.perturbation.png"],
        "dog/b.webp": ["dog/b.png", "dog/b.perturbation.png"],
        "c.tiff": ["c.png", "c.perturbation.png"],
    }
    with pytest.raises(InputError, match="would both be written"):
        plan_outputs(["a.perturbation.png", "a.png"], [".png", ".perturbation.png"])


def test_output_folder_inside_the_input_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "file").write_text("x")
    check_output_folder(tmp_path / "out", str(tmp_path / "in"))
    for out, message in [
        (tmp_path / "in", "inside the input folder"),
        (tmp_path / "in" / "deep" / "er", "inside the input folder"),
        (tmp_path / "file", "existing file"),
    ]:
        with pytest.raises(InputError, match=message):
            check_output_folder(out, str(tmp_path / "in"))


def test_notes_are_counted_per_kind():
    notes = [("a.png", "alpha channel dropped"), ("b.png", "resized"), ("c.png", "resized")]
    assert summarize_notes(notes) == [
        "alpha channel dropped: 1 image (e.g. a.png)",
        "resized: 2 images (e.g. b.png)",
    ]
