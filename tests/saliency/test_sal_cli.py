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
from robustkit.saliency import (
    METHODS,
    METRIC_COLUMNS,
    attribute,
    compare_maps,
    complexity,
    grad_cam,
    gradient,
    integrated_gradients,
    mu_fidelity,
    smoothgrad,
    sparseness,
)
from robustkit.saliency.render import PANEL_GAP
from robustkit_cli.attack import build_attack
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


# ----------------------------------------------------------------------------- every method

SMALL = 8
FAST = ("--steps", "4", "--samples", "6", "--patch-size", "2", "--grid-size", "2")


@pytest.fixture(scope="module")
def relu_model_path(tmp_path_factory) -> Path:
    """A 3-class ReLU CNN on 8x8 images (guided backpropagation and the CAMs apply)."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((SMALL, SMALL, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    path = tmp_path_factory.mktemp("relu") / "relu.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """Three random 8x8 grey images in class folders 0/, 1/ and 2/."""
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(4)
    for label in range(3):
        write_png(root / str(label) / "a.png", rng.integers(0, 256, (SMALL, SMALL, 1), np.uint8))
    return root


def test_method_all_writes_every_method_per_image_named_per_method(
    relu_model_path, small_folder, tmp_path
):
    out = tmp_path / "all"
    result = invoke(relu_model_path, small_folder, "--method", "all", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    report = read_report(out)
    summary, rows = report["summary"], report["images"]
    assert list(summary["methods"]) == list(METHODS) and "method" not in summary
    assert summary["methods"]["integrated_gradients"]["options"]["steps"] == 4
    assert summary["methods"]["rise"]["options"]["samples"] == 6
    assert summary["methods"]["smoothgrad"]["options"]["samples"] == 6
    assert "steps" not in summary["methods"]["rise"]["options"]
    classifier = load_classifier(relu_model_path)
    x = pixels_of(small_folder, rows)
    options = {
        "integrated_gradients": {"steps": 4},
        "smoothgrad": {"samples": 6},
        "rise": {"samples": 6, "grid_size": 2},
        "occlusion": {"patch_size": 2},
        "kernel_shap": {"samples": 6, "patch_size": 2},
    }
    for method in METHODS:
        for row in rows:
            entry = row["methods"][method]
            stem = row["path"][: -len(".png")]
            assert entry["heatmap"] == f"{stem}.{method}.heatmap.png"
            assert entry["overlay"] == f"{stem}.{method}.overlay.png"
            assert entry["map"] == f"{stem}.{method}.npy"
            assert (out / entry["heatmap"]).is_file() and (out / entry["overlay"]).is_file()
        if method in options or method in ("gradient", "grad_cam", "guided_backprop"):
            expected = attribute(classifier, x, method, **options.get(method, {}))
            maps = np.stack([np.load(out / row["methods"][method]["map"]) for row in rows])
            np.testing.assert_allclose(maps, expected.maps, rtol=1e-5, atol=1e-6)
    for method in METHODS:  # the summary names every method with its options
        assert f"\n{method} (" in result.output


def test_method_all_leaves_out_what_the_model_cannot_do(small_folder, tmp_path):
    dense = keras.Sequential(
        [keras.Input((SMALL, SMALL, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    path = tmp_path / "dense.keras"
    dense.save(path)
    out = tmp_path / "dense"
    result = invoke(path, small_folder, "--method", "all", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    left_out = ["guided_backprop", "grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam"]
    for method in left_out:
        assert f"method {method} left out" in result.output
    methods = read_report(out)["summary"]["methods"]
    assert list(methods) == [m for m in METHODS if m not in left_out]
    named = invoke(path, small_folder, "--method", "guided", "--out", tmp_path / "g")
    assert named.exit_code == 2 and "no ReLU layer" in named.output  # asked for by name


def test_guided_backprop_by_name_runs_on_relu6_and_is_refused_on_swish(small_folder, tmp_path):
    """--method guided on a ReLU6 CNN writes the API's guided maps (the rule itself is checked
    against NumPy in test_sal_guided); on a swish CNN it is refused naming what is supported."""

    def saved(activation: keras.layers.Layer, name: str) -> Path:
        keras.utils.set_random_seed(7)
        model = keras.Sequential(
            [
                keras.Input((SMALL, SMALL, 1)),
                keras.layers.Conv2D(4, 3, padding="same", name="conv"),
                activation,
                keras.layers.Flatten(),
                keras.layers.Dense(3),
            ]
        )
        model.save(tmp_path / f"{name}.keras")
        return tmp_path / f"{name}.keras"

    relu6 = saved(keras.layers.ReLU(max_value=6.0), "relu6")
    out = tmp_path / "guided"
    result = invoke(relu6, small_folder, "--method", "guided", "--out", out)
    assert result.exit_code == 0, result.output
    rows = read_report(out)["images"]
    expected = attribute(load_classifier(relu6), pixels_of(small_folder, rows), "guided_backprop")
    maps = np.stack([np.load(out / row["methods"]["guided_backprop"]["map"]) for row in rows])
    np.testing.assert_allclose(maps, expected.maps, rtol=1e-5, atol=1e-7)
    swish = saved(keras.layers.Activation("swish", name="swish"), "swish")
    refused = invoke(swish, small_folder, "--method", "guided", "--out", tmp_path / "refused")
    assert refused.exit_code == 2
    assert "defined for ReLU, ReLU6" in refused.output and "silu (1 layer" in refused.output


def test_metrics_per_image_and_their_means_per_method(relu_model_path, small_folder, tmp_path):
    out = tmp_path / "metrics"
    result = invoke(
        relu_model_path, small_folder, "--method", "gradient,gradxinput",
        "--metrics", "sparseness,complexity,mu_fidelity", "--metric-samples", "8", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = read_report(out)
    summary, rows = report["summary"], report["images"]
    assert summary["metric_names"] == ["sparseness", "complexity", "mu_fidelity"]
    classifier = load_classifier(relu_model_path)
    x = pixels_of(small_folder, rows)
    for method in ("gradient", "gradient_x_input"):
        maps = np.stack([np.load(out / row["methods"][method]["map"]) for row in rows])
        values = {
            name: [row["methods"][method]["metrics"][name] for row in rows]
            for name in ("sparseness", "complexity", "mu_fidelity")
        }
        assert values["sparseness"] == sparseness(maps).tolist()
        assert values["complexity"] == complexity(maps).tolist()
        fidelity = mu_fidelity(classifier, x, attribute(classifier, x, method), samples=8)
        np.testing.assert_allclose(values["mu_fidelity"], fidelity.values, rtol=1e-6)
        means = summary["methods"][method]["metrics"]
        for name, column in values.items():
            assert means[name] == pytest.approx(np.mean(column), rel=1e-12)
    assert "sparseness" in result.output and "mu_fidelity" in result.output


def test_metrics_all_reports_every_column(relu_model_path, small_folder, tmp_path):
    out = tmp_path / "all_metrics"
    result = invoke(
        relu_model_path, small_folder, "--method", "gradient", "--metrics", "all",
        "--metric-samples", "3", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    columns = [column for names in METRIC_COLUMNS.values() for column in names]
    assert list(printed["summary"]["metrics"]) == columns  # one method: also at the top
    for row in printed["images"]:
        assert list(row["metrics"]) == columns
        assert 0 <= row["metrics"]["sparseness"] <= 1 and row["metrics"]["avg_sensitivity"] > 0


def test_under_attack_compares_the_maps_of_clean_and_adversarial(
    relu_model_path, small_folder, tmp_path
):
    out = tmp_path / "attacked"
    result = invoke(
        relu_model_path, small_folder, "--method", "gradient", "--under-attack", "pgd",
        "--eps", "8/255", "--attack-steps", "3", "--top-k", "0.25", "--zoom", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = read_report(out)
    summary, rows = report["summary"], report["images"]
    assert summary["under_attack"]["attack"]["eps"] == pytest.approx(8 / 255)
    assert summary["under_attack"]["attack"]["steps"] == 3
    assert summary["under_attack"]["top_k"] == 0.25
    classifier = load_classifier(relu_model_path)
    x = pixels_of(small_folder, rows)
    labels = np.array([row["label"] for row in rows])
    attack = build_attack("pgd", "linf", 8 / 255, 3, None, None, None, "ce", 0)
    attacked = attack(classifier, x, labels)
    assert [row["adversarial_predicted"] for row in rows] == attacked.adv_pred.tolist()
    assert [row["attack_success"] for row in rows] == attacked.success.tolist()
    clean = np.stack([np.load(out / row["map"]) for row in rows])
    adversarial = np.stack([np.load(out / row["adversarial_map"]) for row in rows])
    targets = np.array([row["target"] for row in rows])
    expected = gradient(classifier, attacked.x_adv, targets)  # the clean map's class
    np.testing.assert_allclose(adversarial, expected.maps, rtol=1e-5, atol=1e-7)
    correlations, overlap, k = compare_maps(clean, adversarial, top_k=0.25)
    assert k == 16
    assert [row["spearman"] for row in rows] == pytest.approx(correlations.tolist(), abs=1e-12)
    assert [row["top_k_overlap"] for row in rows] == overlap.tolist()
    shift = summary["methods"]["gradient"]["shift"]
    assert shift["spearman"] == pytest.approx(np.mean(correlations), rel=1e-12)
    assert shift["top_k_overlap"] == pytest.approx(np.mean(overlap), rel=1e-12)
    for row in rows:
        with Image.open(out / row["shift"]) as picture:
            assert picture.size == (2 * (5 * SMALL + 4 * PANEL_GAP), 2 * SMALL)
    assert "under attack  Spearman" in result.output and "attack      PGD linf" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("--method", "nope"),
        ("--method", "gradient,nope"),
        ("--metrics", "nope"),
        ("--eps", "8/255"),  # without --under-attack
        ("--under-attack", "pgd"),  # without --eps
        ("--under-attack", "fgsm", "--eps", "0.1", "--attack-steps", "3"),
        ("--under-attack", "pgd", "--eps", "0.1", "--top-k", "0"),
        ("--method", "gradient", "--samples", "4"),  # the gradient takes no samples
        ("--method", "gradient,ig", "--patch-size", "2"),  # neither takes a patch size
    ],
)
def test_new_usage_errors_exit_with_2(relu_model_path, small_folder, tmp_path, args):
    result = invoke(relu_model_path, small_folder, *args, "--out", tmp_path / "bad")
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "bad" / "report.json").exists()
