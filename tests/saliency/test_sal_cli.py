"""`robustkit saliency` end to end with click's CliRunner on temporary folders."""

import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sal_helpers import corner_images

from robustkit.io import from_uint8, to_uint8, write_png
from robustkit.models import load_classifier
from robustkit.saliency import grad_cam, integrated_gradients, smoothgrad
from robustkit_cli.main import main

SIZE = 12


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Five images in class folders 0/ and 1/ (labels from the folders)."""
    root = tmp_path_factory.mktemp("images")
    x, y = corner_images(5, seed=9)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        write_png(root / str(label) / f"img{i}.png", to_uint8(image))
    return root


def invoke(*args) -> object:
    return CliRunner().invoke(main, ["saliency", *map(str, args)])


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def pixels_of(folder: Path, rows: list[dict]) -> np.ndarray:
    return from_uint8(
        np.stack([np.asarray(Image.open(folder / row["path"]))[..., None] for row in rows])
    )


def test_ig_writes_heatmap_overlay_and_exact_maps_with_deltas(model_path, image_folder, tmp_path):
    out = tmp_path / "ig"
    result = invoke(model_path, image_folder, "--method", "ig", "--steps", "8", "--out", out)
    assert result.exit_code == 0, result.output
    report = read_report(out)
    rows = report["images"]
    assert len(rows) == 5 and all(row["status"] == "explained" for row in rows)
    summary = report["summary"]
    assert summary["method"] == "integrated_gradients"
    assert summary["options"]["steps"] == 8 and summary["options"]["baseline"] == "black"
    classifier = load_classifier(model_path)
    expected = integrated_gradients(classifier, pixels_of(image_folder, rows), steps=8)
    maps = np.stack([np.load(out / row["map"]) for row in rows])
    np.testing.assert_allclose(maps, expected.maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([row["delta"] for row in rows], expected.delta, atol=1e-4)
    assert [row["target"] for row in rows] == expected.target.tolist()  # predicted classes
    assert summary["ig_completeness"]["max_abs_delta"] == pytest.approx(
        np.abs(expected.delta).max(), abs=1e-4
    )
    for row in rows:
        for key in ("heatmap", "overlay"):
            with Image.open(out / row[key]) as picture:
                assert picture.format == "PNG" and picture.size == (SIZE, SIZE)


def test_existing_results_are_kept_unless_overwrite(model_path, image_folder, tmp_path):
    out = tmp_path / "twice"
    assert invoke(model_path, image_folder, "--method", "gradient", "--out", out).exit_code == 0
    first = (out / "0" / "img0.npy").read_bytes()
    again = invoke(model_path, image_folder, "--method", "gradxinput", "--out", out)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert (out / "0" / "img0.npy").read_bytes() == first
    replaced = invoke(
        model_path, image_folder, "--method", "gradxinput", "--out", out, "--overwrite"
    )
    assert replaced.exit_code == 0
    assert read_report(out)["summary"]["method"] == "gradient_x_input"
    x = pixels_of(image_folder, [{"path": "0/img0.png"}])[0]
    gradient_map = np.load(io.BytesIO(first))
    np.testing.assert_allclose(np.load(out / "0" / "img0.npy"), x * gradient_map, atol=1e-6)


def test_gradcam_with_true_labels_and_zoom(model_path, image_folder, tmp_path):
    out = tmp_path / "cam"
    result = invoke(
        model_path,
        image_folder,
        "--method",
        "gradcam",
        "--target",
        "label",
        "--zoom",
        "3",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    rows = printed["images"]
    assert [row["target"] for row in rows] == [row["label"] for row in rows]
    assert printed["summary"]["options"]["layer"] == "conv"
    labels = np.array([row["label"] for row in rows])
    expected = grad_cam(load_classifier(model_path), pixels_of(image_folder, rows), labels)
    np.testing.assert_allclose(
        np.stack([np.load(out / row["map"]) for row in rows]), expected.maps, rtol=1e-5, atol=1e-6
    )
    with Image.open(out / rows[0]["heatmap"]) as picture:
        assert picture.size == (3 * SIZE, 3 * SIZE)


def test_smoothgrad_noise_does_not_depend_on_the_batch_size(model_path, image_folder, tmp_path):
    common = ("--method", "smoothgrad", "--samples", "4", "--noise", "1/10", "--seed", "7")
    for name, batch in (("small", "2"), ("large", "64")):
        result = invoke(
            model_path, image_folder, *common, "--batch-size", batch, "--out", tmp_path / name
        )
        assert result.exit_code == 0, result.output
    rows = read_report(tmp_path / "large")["images"]
    expected = smoothgrad(
        load_classifier(model_path), pixels_of(image_folder, rows), samples=4, noise=0.1, seed=7
    )
    for i, row in enumerate(rows):
        for name in ("small", "large"):
            np.testing.assert_allclose(
                np.load(tmp_path / name / row["map"]), expected.maps[i], rtol=1e-5, atol=1e-6
            )


@pytest.mark.parametrize(
    "args",
    [
        ("--method", "smoothgrad", "--steps", "5"),  # option of another method
        ("--method", "ig", "--layer", "conv"),
        ("--method", "gradcam", "--view", "diverging"),
        ("--target", "7"),  # the model has 2 classes
        ("--method", "gradcam", "--layer", "nope"),
    ],
)
def test_usage_and_input_errors_exit_with_2(model_path, image_folder, tmp_path, args):
    result = invoke(model_path, image_folder, *args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "bad" / "report.json").exists()


def test_missing_model_labels_and_unsafe_outputs_exit_with_2(model_path, image_folder, tmp_path):
    assert invoke(tmp_path / "none.keras", image_folder, "--out", tmp_path / "o").exit_code == 2
    single = image_folder / "0" / "img0.png"  # one file: no class folders, so no labels
    result = invoke(model_path, single, "--target", "label", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "--target label needs labels" in result.output
    inside = invoke(model_path, image_folder, "--out", image_folder / "maps")
    assert inside.exit_code == 2
