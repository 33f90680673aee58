"""The 8-bit grid, exact PNG round trips, atomic writes and reports on disk."""

import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from robustkit.errors import InputError
from robustkit.io import (
    RunJournal,
    atomic_write,
    from_uint8,
    perturbation_codes,
    read_image,
    remove_temp_files,
    save_image,
    to_uint8,
    write_csv,
    write_json,
    write_png,
)
from robustkit.io.files import TEMP_SUFFIX

BOUNDS = st.tuples(st.floats(-10, 10, allow_nan=False), st.floats(0.01, 20, allow_nan=False)).map(
    lambda pair: (pair[0], pair[0] + pair[1])
)


@settings(max_examples=60, deadline=None)
@given(codes=st.lists(st.integers(0, 255), min_size=1, max_size=64), bounds=BOUNDS)
def test_codes_survive_float_round_trip(codes, bounds):
    codes = np.array(codes, dtype=np.uint8)
    assert np.array_equal(to_uint8(from_uint8(codes, bounds), bounds), codes)


@settings(max_examples=60, deadline=None)
@given(
    clean=st.lists(st.integers(0, 255), min_size=8, max_size=8),
    steps=st.lists(st.integers(-76, 76), min_size=8, max_size=8),
)
def test_attack_grid_arithmetic_rounds_to_the_intended_code(clean, steps):
    # A quantized attack returns x + k * (1/255) computed in float32; the code must be clean + k.
    clean = np.array(clean)
    steps = np.array(steps)
    expected = np.clip(clean + steps, 0, 255)
    x = from_uint8(clean.astype(np.uint8))
    x_adv = np.clip(x + steps.astype(np.float32) * np.float32(1 / 255), 0, 1).astype(np.float32)
    assert np.array_equal(to_uint8(x_adv), expected)


def test_from_uint8_is_the_exact_grid():
    codes = np.arange(256, dtype=np.uint8)
    assert from_uint8(codes).dtype == np.float32
    assert np.array_equal(from_uint8(codes), (codes / 255.0).astype(np.float32))
    assert np.array_equal(from_uint8(codes, (-1, 1)), (-1 + codes * (2 / 255)).astype(np.float32))


def test_to_uint8_rounds_to_nearest_and_refuses_out_of_bounds():
    assert to_uint8(np.array([0.4 / 255, 0.6 / 255, 1 + 0.4 / 255, -0.4 / 255])).tolist() == [
        0,
        1,
        255,
        0,
    ]
    with pytest.raises(InputError, match="outside the bounds"):
        to_uint8(np.array([1.01]))
    with pytest.raises(InputError, match="NaN"):
        to_uint8(np.array([math.nan]))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_bit_exact(tmp_path, channels):
    codes = np.random.default_rng(channels).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    write_png(tmp_path / "deep" / "a.png", codes)
    read, notes = read_image(tmp_path / "deep" / "a.png", channels=channels)
    assert np.array_equal(read, codes) and notes == []
    assert Image.open(tmp_path / "deep" / "a.png").mode == ("L" if channels == 1 else "RGB")


def test_save_image_writes_what_it_returns(tmp_path):
    x = from_uint8(np.arange(12, dtype=np.uint8).reshape(2, 2, 3)) + np.float32(1e-7)
    codes = save_image(tmp_path / "x.png", x)
    assert np.array_equal(codes, np.arange(12).reshape(2, 2, 3))
    assert np.array_equal(read_image(tmp_path / "x.png", channels=3)[0], codes)


def test_write_png_refuses_floats(tmp_path):
    with pytest.raises(InputError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((2, 2, 1), np.float32))


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target, "w") as stream:
        stream.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_remove_temp_files_cleans_up_after_a_killed_run(tmp_path):
    (tmp_path / "a").mkdir()
    leftover = tmp_path / "a" / f".x.png.123{TEMP_SUFFIX}"
    leftover.write_bytes(b"partial")
    (tmp_path / "a" / "x.png").write_bytes(b"keep")
    assert remove_temp_files(tmp_path) == 1
    assert not leftover.exists() and (tmp_path / "a" / "x.png").exists()


def test_perturbation_codes_map_zero_to_grey_and_peak_to_the_ends():
    delta = np.array([[[0.0], [0.1]], [[-0.2], [0.05]]])
    codes = perturbation_codes(delta)
    assert codes[..., 0].tolist() == [[128, 191], [0, 159]]
    assert np.all(perturbation_codes(np.zeros((2, 2, 1))) == 128)


def test_reports_round_trip(tmp_path):
    rows = [
        {"path": "a.png", "success": True, "linf": np.float32(0.25), "label": np.int64(3)},
        {"path": "b.png", "success": False, "linf": math.nan, "label": None},
    ]
    write_json(tmp_path / "r.json", {"rows": rows, "shape": (1, 2)})
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rows"][0] == {"path": "a.png", "success": True, "linf": 0.25, "label": 3}
    assert data["rows"][1]["linf"] is None and data["shape"] == [1, 2]
    write_csv(tmp_path / "r.csv", rows, ["path", "label", "success", "linf"])
    with (tmp_path / "r.csv").open() as stream:
        read = list(csv.DictReader(stream))
    assert read == [
        {"path": "a.png", "label": "3", "success": "true", "linf": "0.25"},
        {"path": "b.png", "label": "", "success": "false", "linf": ""},
    ]


def test_journal_recovers_from_a_cut_last_line(tmp_path):
    journal = RunJournal(tmp_path / "j.jsonl")
    journal.start({"eps": 0.3})
    journal.append([{"path": "a.png"}, {"path": "b.png"}])
    with journal.path.open("a") as stream:
        stream.write('{"path": "c.p')  # interrupted mid-line
    header, rows = journal.recover()
    assert header == {"eps": 0.3} and [row["path"] for row in rows] == ["a.png", "b.png"]
    journal.append([{"path": "d.png"}])
    assert [row["path"] for row in journal.read()[1]] == ["a.png", "b.png", "d.png"]
    journal.remove()
    assert not journal.exists()


def test_journal_refuses_a_foreign_file(tmp_path):
    (tmp_path / "j.jsonl").write_text("hello\n")
    with pytest.raises(InputError, match="not a robustkit run journal"):
        RunJournal(tmp_path / "j.jsonl").read()
