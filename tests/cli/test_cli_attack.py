"""`robustkit attack` end to end on temporary folders (click's CliRunner)."""

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from cli_helpers import (
    CLASSES,
    class_tree,
    interrupt_at_second_batch,
    invoke,
    linear,
    report,
    save,
    tiny_cnn,
    write_images,
)
from PIL import Image

from robustkit.io import from_uint8, read_image
from robustkit.models import Preprocessing, load_classifier
from robustkit.runs import attack as attack_module
from robustkit_cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FAST = ("--steps", "5", "--eps", "0.3")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    weights = np.random.default_rng(1).normal(size=(64, 3))
    return {
        "gray": save(tiny_cnn(1), folder / "gray.keras"),
        "rgb": save(tiny_cnn(3), folder / "rgb.keras"),
        "linear": save(linear(weights, (8, 8, 1)), folder / "linear.keras"),
        "linear255": save(linear(weights / 255, (8, 8, 1)), folder / "linear255.keras"),
    }


def predictions(model_path, x, **options):
    classifier = load_classifier(model_path, **options)
    return classifier.predict_logits(x).argmax(axis=1)


def saved_pixels(out, rows, channels):
    return from_uint8(
        np.stack([read_image(out / row["output"], channels=channels)[0] for row in rows])
    )


def test_example_model_report_agrees_with_the_saved_pngs(tmp_path):
    """The README job on the shipped example: --json parses, PNGs re-read and re-classified."""
    out = tmp_path / "adv"
    result = invoke(
        EXAMPLES / "mnist_cnn.keras", EXAMPLES / "images", "--eps", "0.3", "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == report(out)
    rows, summary = printed["images"], printed["summary"]
    assert len(rows) == 20 and summary["images_attacked"] == 20
    assert summary["label_source"] == "class folders" and summary["clean_accuracy"] == 1.0
    assert (
        summary["attack"]["quantize"] == 255 and summary["versions"]["keras"] == keras.__version__
    )
    x_adv = saved_pixels(out, rows, 1)
    x = from_uint8(
        np.stack([read_image(EXAMPLES / "images" / r["path"], channels=1)[0] for r in rows])
    )
    adv_pred = predictions(EXAMPLES / "mnist_cnn.keras", x_adv)
    assert adv_pred.tolist() == [row["adv_pred"] for row in rows]
    assert [row["success"] for row in rows] == (adv_pred != [row["label"] for row in rows]).tolist()
    linf = np.abs(x_adv - x).reshape(20, -1).max(axis=1)
    assert np.all(linf <= 76 / 255 + 1e-7)  # floor(0.3 * 255) grid steps
    np.testing.assert_allclose([row["linf"] for row in rows], linf, atol=1e-7)
    assert summary["robust_accuracy"] == np.mean(adv_pred == [row["label"] for row in rows])
    with (out / "report.csv").open() as stream:
        csv_rows = list(csv.DictReader(stream))
    assert [(r["path"], int(r["adv_pred"]), r["success"]) for r in csv_rows] == [
        (r["path"], r["adv_pred"], "true" if r["success"] else "false") for r in rows
    ]


def test_human_summary_and_eps_as_a_fraction(tmp_path, models):
    class_tree(tmp_path / "in")
    result = invoke(
        models["gray"], tmp_path / "in", "--eps", "8/255", "--steps", "3", "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    assert "clean accuracy" in result.stdout and "attack success" in result.stdout
    summary = report(tmp_path / "o")["summary"]
    assert summary["attack"]["eps"] == 8 / 255 and summary["max_linf"] <= 8 / 255 + 1e-12
    assert "steps of the 8-bit grid" not in result.stderr  # 8/255 lies on the grid


def test_labels_csv_by_name_and_index(tmp_path, models):
    write_images(tmp_path / "in", ["x.png", "y.png", "z.png", "sub/w.png"])
    (tmp_path / "labels.csv").write_text("path,label\nx.png,2\ny.png,ant\nsub/w.png,bee\nz.png,0\n")
    (tmp_path / "names.txt").write_text("\n".join(CLASSES))
    out = tmp_path / "o"
    result = invoke(
        models["linear"],
        tmp_path / "in",
        *FAST,
        "--labels",
        tmp_path / "labels.csv",
        "--class-names",
        tmp_path / "names.txt",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in report(out)["images"]}
    assert {p: (r["label"], r["label_name"]) for p, r in rows.items()} == {
        "sub/w.png": (1, "bee"),
        "x.png": (2, "cat"),
        "y.png": (0, "ant"),
        "z.png": (0, "ant"),
    }
    summary = report(out)["summary"]
    assert summary["label_source"] == "labels file"
    assert summary["clean_accuracy"] == np.mean(
        [r["clean_pred"] == r["label"] for r in rows.values()]
    )


def test_class_subfolders_and_names_file(tmp_path, models):
    class_tree(tmp_path / "in")
    result = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    rows = report(tmp_path / "o")["images"]
    assert [(r["path"].split("/")[0], r["label"]) for r in rows] == [
        (c, i) for i, c in enumerate(CLASSES) for _ in range(2)
    ]
    # a names file maps folder names to indices in model order, whatever their sorting
    (tmp_path / "names.txt").write_text("cat\nant\nbee\n")
    result = invoke(
        models["gray"],
        tmp_path / "in",
        *FAST,
        "--class-names",
        tmp_path / "names.txt",
        "--out",
        tmp_path / "o2",
    )
    assert result.exit_code == 0, result.output
    assert {r["path"].split("/")[0]: r["label"] for r in report(tmp_path / "o2")["images"]} == {
        "cat": 0,
        "ant": 1,
        "bee": 2,
    }


def test_model_predictions_as_labels(tmp_path, models):
    write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    result = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "model's own clean predictions" in result.stderr
    data = report(tmp_path / "o")
    assert data["summary"]["label_source"] == "model predictions"
    assert data["summary"]["clean_accuracy"] is None
    assert all(row["label"] is None for row in data["images"])
    x = from_uint8(
        np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in data["images"]])
    )
    assert [r["clean_pred"] for r in data["images"]] == predictions(models["gray"], x).tolist()
    adv = predictions(models["gray"], saved_pixels(tmp_path / "o", data["images"], 1))
    assert [r["success"] for r in data["images"]] == (
        adv != predictions(models["gray"], x)
    ).tolist()


def test_folder_count_mismatch_is_refused_with_a_fix(tmp_path, models):
    write_images(tmp_path / "in", ["batch1/a.png", "batch2/b.png"])
    result = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "2 class subfolders but the model has 3 classes" in result.stderr
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "note: eps 0.3 is 76.5 steps of the 8-bit grid; saved pixels move by at most 76 steps "
        "(0.2980).",
        next(line for line in result.stderr.splitlines() if line.startswith("error: ")),
    ]
    result = invoke(
        models["gray"], tmp_path / "in", *FAST, "--no-folder-labels", "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output


def test_grayscale_images_for_an_rgb_model(tmp_path, models):
    class_tree(tmp_path / "in", mode="L")
    result = invoke(models["rgb"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert "grayscale replicated to RGB: 6 images" in result.stderr
    rows = report(tmp_path / "o")["images"]
    assert Image.open(tmp_path / "o" / rows[0]["output"]).mode == "RGB"
    adv = predictions(models["rgb"], saved_pixels(tmp_path / "o", rows, 3))
    assert adv.tolist() == [r["adv_pred"] for r in rows]


def test_colour_jpeg_with_alpha_png_for_a_gray_model_and_resize(tmp_path, models):
    write_images(tmp_path / "in", ["a.jpg", "b.png"], size=(11, 9), mode="RGB")
    write_images(tmp_path / "in", ["c.png"], size=(11, 9), mode="RGBA")
    refused = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert refused.exit_code == 2 and "--resize" in refused.stderr and "9x11" in refused.stderr
    result = invoke(
        models["gray"], tmp_path / "in", *FAST, "--resize", "bilinear", "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    assert "alpha channel dropped: 1 image (e.g. c.png)" in result.stderr
    assert "resized to 8x8 (bilinear): 3 images" in result.stderr
    rows = report(tmp_path / "o")["images"]
    assert [r["output"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert all(Image.open(tmp_path / "o" / r["output"]).size == (8, 8) for r in rows)


def test_corrupt_truncated_and_non_image_files_are_skipped(tmp_path, models):
    class_tree(tmp_path / "in")
    (tmp_path / "in" / "ant" / "notes.txt").write_text("hello")
    (tmp_path / "in" / "bee" / "fake.png").write_text("not a png")
    good = (tmp_path / "in" / "cat" / "0.png").read_bytes()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "cat" / "big.png")
    (tmp_path / "in" / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    result = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    for name in ("ant/notes.txt", "bee/fake.png", "cat/cut.png"):
        assert f"warning: skipped {name}:" in result.stderr
    rows = {r["path"]: r for r in report(tmp_path / "o")["images"]}
    assert rows["ant/notes.txt"]["reason"] == "not an image file (.txt extension)"
    assert {p for p, r in rows.items() if r["status"] == "skipped"} == {
        "ant/notes.txt",
        "bee/fake.png",
        "cat/cut.png",
    }
    assert report(tmp_path / "o")["summary"]["images_attacked"] == 7
    strict = invoke(models["gray"], tmp_path / "in", *FAST, "--strict", "--out", tmp_path / "o2")
    assert (
        strict.exit_code == 2
        and "strict" in strict.stderr
        and not (tmp_path / "o2" / "report.json").exists()
    )


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("empty", (), "No images to read"),
        ("tree", ("--out", "{in}/sub"), "inside the input folder"),
        ("tree", ("--out", "{in}"), "inside the input folder"),
        ("tree", ("--targeted",), "--targeted needs"),
        ("tree", ("--attack", "fgsm", "--steps", "3"), "--attack pgd only"),
        ("tree", ("--eps", "8/0"), "is not a number"),
        ("tree", ("--target-class", "wasp"), "neither a class index nor one of the class names"),
        ("tree", ("--mean", "0.1,0.2"), "mean has 2 values but the model's images have 1 channel"),
        ("missing-model", (), "Model file not found"),
        ("not-a-model", (), "is not a Keras model"),
    ],
)
def test_refusals_exit_2_with_one_line(tmp_path, models, setup, args, message):
    source = tmp_path / "in"
    source.mkdir()
    model = models["gray"]
    if setup != "empty":
        class_tree(source)
    if setup == "missing-model":
        model = tmp_path / "nope.keras"
    if setup == "not-a-model":
        model = tmp_path / "fake.keras"
        model.write_text("zip? no")
    args = [a.format(**{"in": source}) for a in args]
    result = invoke(model, source, *FAST, "--out", tmp_path / "o", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_existing_results_are_not_overwritten_without_the_flag(tmp_path, models):
    class_tree(tmp_path / "in")
    out = tmp_path / "o"
    assert invoke(models["gray"], tmp_path / "in", *FAST, "--out", out).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    again = invoke(models["gray"], tmp_path / "in", "--steps", "5", "--eps", "0.1", "--out", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    forced = invoke(
        models["gray"], tmp_path / "in", "--steps", "5", "--eps", "0.1", "--out", out, "--overwrite"
    )
    assert forced.exit_code == 0, forced.output
    assert report(out)["summary"]["attack"]["eps"] == 0.1


def test_outputs_never_replace_inputs(tmp_path, models):
    write_images(tmp_path, ["a.png"])
    result = invoke(models["gray"], tmp_path / "a.png", *FAST, "--out", tmp_path, "--overwrite")
    assert result.exit_code == 2 and "would replace an input image" in result.stderr


def test_single_file_targeted_by_name_with_perturbation(tmp_path, models):
    write_images(tmp_path / "in", ["x.bmp"])
    (tmp_path / "names.txt").write_text("\n".join(CLASSES))
    out = tmp_path / "o"
    result = invoke(
        models["linear"],
        tmp_path / "in" / "x.bmp",
        "--eps",
        "1",
        "--steps",
        "20",
        "--target-class",
        "bee",
        "--class-names",
        tmp_path / "names.txt",
        "--save-perturbation",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    (row,) = report(out)["images"]
    assert row["target"] == 1 and row["output"] == "x.png"
    adv = predictions(models["linear"], saved_pixels(out, [row], 1))
    assert row["success"] == bool(adv[0] == 1) and row["adv_pred"] == adv[0]
    x = read_image(tmp_path / "in" / "x.bmp", channels=1)[0].astype(int)
    x_adv = read_image(out / "x.png", channels=1)[0].astype(int)
    perturbation = read_image(out / "x.perturbation.png", channels=1)[0].astype(int)
    # zero change is mid-grey, the sign of the change is kept, the largest change reaches 0/255
    assert np.all(perturbation[x_adv == x] == 128)
    moved = perturbation != 128
    assert np.all(np.sign(perturbation - 128)[moved] == np.sign(x_adv - x)[moved])
    peak = np.abs(x_adv - x) == np.abs(x_adv - x).max()
    assert set(perturbation[peak].tolist()) <= {0, 255} and peak.any()


def test_least_likely_target_success_means_hitting_it(tmp_path, models):
    class_tree(tmp_path / "in")
    result = invoke(
        models["linear"],
        tmp_path / "in",
        "--eps",
        "0.5",
        "--steps",
        "10",
        "--target",
        "least-likely",
        "--out",
        tmp_path / "o",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["images"]
    classifier = load_classifier(models["linear"])
    x = from_uint8(np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in rows]))
    assert [r["target"] for r in rows] == classifier.predict_logits(x).argmin(axis=1).tolist()
    assert [r["success"] for r in rows] == [r["adv_pred"] == r["target"] for r in rows]


def test_input_scale_moves_into_the_graph(tmp_path, models):
    """A model expecting 0..255 with --input-scale 255 behaves as the [0, 1] model."""
    class_tree(tmp_path / "in")
    plain = invoke(models["linear"], tmp_path / "in", *FAST, "--out", tmp_path / "a", "--json")
    scaled = invoke(
        models["linear255"],
        tmp_path / "in",
        *FAST,
        "--input-scale",
        "255",
        "--out",
        tmp_path / "b",
        "--json",
    )
    assert plain.exit_code == scaled.exit_code == 0
    rows_a, rows_b = (json.loads(r.stdout)["images"] for r in (plain, scaled))
    assert [r["clean_pred"] for r in rows_a] == [r["clean_pred"] for r in rows_b]
    np.testing.assert_allclose(
        [r["clean_confidence"] for r in rows_a], [r["clean_confidence"] for r in rows_b], rtol=1e-4
    )
    assert json.loads(scaled.stdout)["summary"]["preprocessing"]["scale"] == 255
    x = from_uint8(
        np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in rows_b])
    )
    expected = predictions(models["linear255"], x, preprocessing=Preprocessing(scale=255.0))
    assert [r["clean_pred"] for r in rows_b] == expected.tolist()


def test_unsafe_model_needs_the_flag(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Lambda(lambda t: t * 2.0),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    path = save(model, tmp_path / "lambda.keras")
    class_tree(tmp_path / "in")
    refused = invoke(path, tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert refused.exit_code == 2 and "--unsafe-load" in refused.stderr
    allowed = invoke(path, tmp_path / "in", *FAST, "--out", tmp_path / "o", "--unsafe-load")
    assert allowed.exit_code == 0, allowed.output
    assert "unsafe loading is on" in allowed.stderr


def test_failure_during_the_run_exits_1_and_debug_shows_the_traceback(
    tmp_path, models, monkeypatch
):
    class_tree(tmp_path / "in")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(attack_module, "write_png", disk_full)
    result = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o", "--quiet")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: OSError: [Errno 28] No space left on device (rerun with --debug for the traceback)"
    ]
    debug = invoke(models["gray"], tmp_path / "in", *FAST, "--out", tmp_path / "o2", "--debug")
    assert debug.exit_code == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith("OSError: [Errno 28] No space left on device")


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, models, monkeypatch):
    class_tree(tmp_path / "in", per_class=3)
    args = (models["gray"], tmp_path / "in", "--steps", "4", "--eps", "0.2", "--batch-size", "4")
    complete = invoke(*args, "--out", tmp_path / "full", "--save-perturbation")
    assert complete.exit_code == 0, complete.output

    interrupt_at_second_batch(monkeypatch)
    out = tmp_path / "resumed"
    cut = invoke(*args, "--out", out, "--save-perturbation")
    assert cut.exit_code == 1 and "rerun the same command" in cut.stderr
    assert not (out / "report.json").exists()
    assert len(list(out.rglob("*.perturbation.png"))) == 4
    assert not list(out.rglob("*robustkit-tmp"))
    monkeypatch.undo()  # the second batch goes through again

    other = invoke(
        models["gray"],
        tmp_path / "in",
        "--steps",
        "4",
        "--eps",
        "0.1",
        "--batch-size",
        "4",
        "--out",
        out,
        "--save-perturbation",
    )
    assert (
        other.exit_code == 2
        and "unfinished run with other settings (attack differ)" in other.stderr
    )

    resumed = invoke(*args, "--out", out, "--save-perturbation")
    assert resumed.exit_code == 0, resumed.output
    assert (
        "resuming an interrupted run" in resumed.stderr and "4 files already done" in resumed.stderr
    )
    assert "(this run attacked 5 images; 4 were done by an earlier run)" in resumed.stdout
    drop = {"seconds", "images_per_second"}  # timings: the rest of the report is the same
    full, again = report(tmp_path / "full"), report(out)
    assert full["images"] == again["images"]
    assert {k: v for k, v in full["summary"].items() if k not in drop} == {
        k: v for k, v in again["summary"].items() if k not in drop
    }
    for path in (tmp_path / "full").rglob("*.png"):
        assert path.read_bytes() == (out / path.relative_to(tmp_path / "full")).read_bytes()
    assert not (out / attack_module.JOURNAL).exists()


def test_help_lists_commands_and_exit_codes():
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--help"])
    assert (
        result.exit_code == 0
        and "attack" in result.stdout
        and "2 usage or input error" in result.stdout
    )
    result = CliRunner().invoke(main, ["attack", "--help"])
    assert result.exit_code == 0 and "--save-perturbation" in result.stdout


@pytest.mark.parametrize(
    ("args", "config", "norm"),
    [
        (("--attack", "fgsm", "--eps", "16/255"), {"attack": "FGSM", "random_start": False},
         "linf"),
        (
            ("--norm", "l2", "--eps", "1.5", "--loss", "margin", "--restarts", "2", "--steps", "4",
             "--no-random-start", "--step-size", "0.5", "--seed", "7"),
            {"attack": "PGD", "loss": "margin", "restarts": 2, "random_start": False,
             "step_size": 0.5, "seed": 7},
            "l2",
        ),
    ],
)  # fmt: skip
def test_attack_options_reach_the_attack_and_the_ball_holds(tmp_path, models, args, config, norm):
    class_tree(tmp_path / "in")
    result = invoke(models["gray"], tmp_path / "in", *args, "--out", tmp_path / "o", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert config.items() <= data["summary"]["attack"].items()
    eps = data["summary"]["attack"]["eps"]
    x = from_uint8(
        np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in data["images"]])
    )
    delta = (
        (saved_pixels(tmp_path / "o", data["images"], 1) - x).reshape(len(x), -1).astype(np.float64)
    )
    distance = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(distance <= eps + 1e-6)
    np.testing.assert_allclose([r[norm] for r in data["images"]], distance, atol=1e-6)


def test_a_model_of_undefined_input_size_runs_at_the_given_size(tmp_path):
    """A (None, None, 3) model is refused with the fix named; with --input-size and --resize it
    attacks RGB images of several sizes at that size, and the saved PNGs re-classify as
    reported by the model run at that size."""
    keras.utils.set_random_seed(3)
    image = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model_path = save(keras.Model(image, keras.layers.Dense(3)(pooled)), tmp_path / "any.keras")
    write_images(tmp_path / "in", ["a.png", "b.jpg"], size=(13, 9), mode="RGB")
    write_images(tmp_path / "in", ["c.png"], size=(6, 20), mode="RGB", seed=1)
    refused = invoke(model_path, tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert refused.exit_code == 2 and "--input-size" in refused.stderr
    result = invoke(
        model_path, tmp_path / "in", *FAST, "--input-size", "10x12", "--resize", "bilinear",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = report(tmp_path / "o")["images"]
    assert all(Image.open(tmp_path / "o" / r["output"]).size == (12, 10) for r in rows)
    adv = predictions(model_path, saved_pixels(tmp_path / "o", rows, 3), input_shape=(10, 12, 3))
    assert adv.tolist() == [r["adv_pred"] for r in rows]
    bad = invoke(model_path, tmp_path / "in", "--input-size", "10by12", "--out", tmp_path / "p")
    assert bad.exit_code == 2 and "HEIGHTxWIDTH" in bad.output
