"""`robustkit attack`, `saliency` and `evaluate` on saved real models (MobileNetV2, and the
fine-tuned model with a nested base) and real photos: scikit-image's sample images saved as
JPEGs and PNGs of several sizes (one grayscale), resized to the model's input by --resize.
Every number the commands report is re-derived from the files through the Python API."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner, Result
from PIL import Image
from zoo_helpers import FULL_ZOO, ZOO, photo

from robustkit.io import from_uint8, read_image
from robustkit.models import load_classifier
from robustkit.saliency import attribute
from robustkit_cli.main import main

# file -> (photo, width x height it is saved at); one grayscale photo goes to the RGB models
PHOTO_FILES = {
    "astronaut.jpg": ("astronaut", (128, 128)),
    "chelsea.png": ("chelsea", (113, 75)),
    "coffee.jpg": ("coffee", (150, 100)),
    "rocket.png": ("rocket", (160, 107)),
    "camera.png": ("camera", (96, 96)),
}
# how pixels in [0, 1] reach each saved model, as command-line options
MODEL_OPTIONS = {
    "mobilenet_v2": ("--input-scale", "2", "--mean", "1"),  # 2x - 1, into [-1, 1]
    "fine_tuned": ("--input-scale", "255"),  # its Rescaling inside takes 0..255
}
EPS = 8 / 255


def invoke(command: str, *args: object) -> Result:
    return CliRunner().invoke(main, [command, *map(str, args)])


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for name, (source, size) in PHOTO_FILES.items():
        Image.fromarray(photo(source)).resize(size, Image.BILINEAR).save(root / name)
    return root


@pytest.fixture(scope="module")
def saved(zoo, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in MODEL_OPTIONS:
        paths[name] = str(folder / f"{name}.keras")
        zoo(name).model.save(paths[name])
    return paths


def resized_photos(folder: Path, size: int) -> tuple[list[str], np.ndarray]:
    """The photo files in path order, read as the commands read them: RGB, resized bilinearly."""
    names = sorted(PHOTO_FILES)
    codes = [
        read_image(folder / n, channels=3, size=(size, size), resize="bilinear")[0] for n in names
    ]
    return names, from_uint8(np.stack(codes))


def api_classifier(zoo, name: str, path: str, x: np.ndarray):
    """The classifier the saved file was written from (its compiled functions already traced by
    the other modules), once the file loaded through the API with the preprocessing the CLI
    options say is checked to give the same logits."""
    loaded = load_classifier(path, preprocessing=ZOO[name].preprocessing)
    classifier = zoo(name)
    np.testing.assert_allclose(
        loaded.logits(tf.constant(x)).numpy(), classifier.logits(tf.constant(x)).numpy(), rtol=1e-5
    )
    return classifier


@pytest.mark.parametrize("name", list(MODEL_OPTIONS))
def test_attack_on_photos_agrees_with_the_saved_pngs(
    zoo, saved, photo_folder, tmp_path, name
) -> None:
    out = tmp_path / "adv"
    result = invoke(
        "attack", saved[name], photo_folder, "--eps", "8/255", "--steps", "2",
        "--resize", "bilinear", *MODEL_OPTIONS[name], "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resized to 64x64 (bilinear): 5 images" in result.stderr
    printed = json.loads(result.stdout)
    rows, summary = printed["images"], printed["summary"]
    assert [row["path"] for row in rows] == sorted(PHOTO_FILES)
    assert summary["label_source"] == "model predictions" and summary["clean_accuracy"] is None
    _, x = resized_photos(photo_folder, 64)
    classifier = api_classifier(zoo, name, saved[name], x)
    assert [row["clean_pred"] for row in rows] == classifier.predict_logits(x).argmax(1).tolist()
    saved_pngs = [read_image(out / row["output"], channels=3)[0] for row in rows]
    assert all(png.shape == (64, 64, 3) for png in saved_pngs)
    x_adv = from_uint8(np.stack(saved_pngs))
    adv_pred = classifier.predict_logits(x_adv).argmax(axis=1)
    assert adv_pred.tolist() == [row["adv_pred"] for row in rows]
    assert [row["success"] for row in rows] == (adv_pred != [r["label"] for r in rows]).tolist()
    linf = np.abs(x_adv - x).reshape(len(rows), -1).max(axis=1)
    assert np.all(linf <= EPS + 1e-7)
    np.testing.assert_allclose([row["linf"] for row in rows], linf, atol=1e-7)
    assert summary["attack_success_rate"] > 0


def test_grad_cam_of_the_fine_tuned_model_reads_inside_its_nested_base(
    zoo, saved, photo_folder, tmp_path
) -> None:
    out = tmp_path / "cam"
    result = invoke(
        "saliency", saved["fine_tuned"], photo_folder, "--method", "gradcam",
        "--resize", "bilinear", *MODEL_OPTIONS["fine_tuned"], "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    rows = printed["images"]
    assert printed["summary"]["options"]["layer"] == "Conv_1"  # the base's last convolution
    assert all(row["status"] == "explained" for row in rows)
    _, x = resized_photos(photo_folder, 64)
    expected = attribute(api_classifier(zoo, "fine_tuned", saved["fine_tuned"], x), x, "grad_cam")
    assert [row["target"] for row in rows] == expected.target.tolist()
    maps = np.stack([np.load(out / row["map"]) for row in rows])
    np.testing.assert_allclose(maps, expected.maps, rtol=1e-4, atol=1e-5 * expected.maps.max())
    for row in rows:
        with Image.open(out / row["heatmap"]) as heatmap, Image.open(out / row["overlay"]) as over:
            assert heatmap.size == over.size == (64, 64)


def test_integrated_gradients_of_mobilenet_v2_report_their_completeness(
    zoo, saved, photo_folder, tmp_path
) -> None:
    out = tmp_path / "ig"
    result = invoke(
        "saliency", saved["mobilenet_v2"], photo_folder, "--method", "ig", "--steps", "4",
        "--resize", "bilinear", *MODEL_OPTIONS["mobilenet_v2"], "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    rows = printed["images"]
    assert printed["summary"]["method"] == "integrated_gradients"
    _, x = resized_photos(photo_folder, 64)
    classifier = api_classifier(zoo, "mobilenet_v2", saved["mobilenet_v2"], x)
    logits = classifier.predict_logits(x)
    targets = logits.argmax(axis=1)
    assert [row["target"] for row in rows] == targets.tolist()
    black = classifier.predict_logits(np.zeros_like(x))
    gap = logits[np.arange(len(x)), targets] - black[np.arange(len(x)), targets]
    maps = np.stack([np.load(out / row["map"]) for row in rows])
    assert maps.shape == (5, 64, 64, 3)
    delta = maps.reshape(5, -1).sum(axis=1) - gap
    np.testing.assert_allclose([row["delta"] for row in rows], delta, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "name",
    [
        "fine_tuned",
        pytest.param(
            "mobilenet_v2",
            marks=pytest.mark.skipif(not FULL_ZOO, reason="set ROBUSTKIT_FULL_ZOO=1 to run"),
        ),
    ],
)
def test_evaluate_on_labelled_photos(zoo, saved, photo_folder, tmp_path, name) -> None:
    """Labels from a CSV (the model's own predictions, so clean accuracy is 1); the quick
    suite's robust accuracy is what the per-example records say."""
    names, x = resized_photos(photo_folder, 64)
    labels = api_classifier(zoo, name, saved[name], x).predict_logits(x).argmax(axis=1)
    csv_path = tmp_path / "labels.csv"
    with csv_path.open("w", newline="") as stream:
        csv.writer(stream).writerows(zip(names, labels.tolist(), strict=True))
    out = tmp_path / "eval"
    result = invoke(
        "evaluate", saved[name], photo_folder, "--labels", csv_path, "--eps", "8/255",
        "--suite", "quick", "--checks", "none", "--per-example", "--resize", "bilinear",
        *MODEL_OPTIONS[name], "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "report.json").read_text())
    assert printed["num_examples"] == 5 and printed["clean_accuracy"] == 1.0
    records = printed["examples"]
    assert records["labels"] == labels.tolist()
    assert printed["robust_accuracy"] == [float(np.mean(records["robust"][0]))]
    assert all(d <= EPS + 1e-6 for d in records["linf"][0])
    assert all((out / file).exists() for file in ("report.md", "robustness_curve.png"))
