"""``robustkit.runs.explain_folder`` from Python: the saved maps are the method's maps, the report
carries the IG completeness deltas, and refusals come before anything is written."""

import json

import numpy as np
import pytest
from cli_helpers import class_tree, tiny_cnn, write_images
from PIL import Image

from robustkit.errors import InputError
from robustkit.io import from_uint8, read_image
from robustkit.models import Classifier
from robustkit.runs import RenderOptions, explain_folder
from robustkit.saliency import integrated_gradients


@pytest.fixture(scope="module")
def classifier():
    return Classifier(tiny_cnn(1, seed=2))


def test_integrated_gradients_maps_and_deltas_on_disk(classifier, tmp_path):
    class_tree(tmp_path / "in")
    out = tmp_path / "maps"
    calls = []
    report = explain_folder(
        classifier,
        tmp_path / "in",
        out,
        "ig",
        target="label",
        render=RenderOptions(scale=2),
        progress=lambda done, total: calls.append((done, total)),
        steps=8,
    )
    assert calls == [(0, 6), (6, 6)]
    assert report.to_dict() == json.loads((out / "report.json").read_text())
    rows = report.rows
    labels = [0, 0, 1, 1, 2, 2]
    assert [row["target"] for row in rows] == [row["label"] for row in rows] == labels
    x = from_uint8(np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in rows]))
    expected = integrated_gradients(classifier, x, np.array(labels), steps=8)
    maps = np.stack([np.load(out / row["map"]) for row in rows])
    np.testing.assert_allclose(maps, expected.maps, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([row["delta"] for row in rows], expected.delta, atol=1e-5)
    summary = report.summary
    assert summary["method"] == "integrated_gradients" and summary["options"]["steps"] == 8
    assert summary["ig_completeness"]["max_abs_delta"] == max(abs(r["delta"]) for r in rows)
    with Image.open(out / rows[0]["heatmap"]) as picture:
        assert picture.size == (16, 16)


def test_refusals_come_before_any_output(classifier, tmp_path):
    write_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "maps"
    with pytest.raises(InputError, match="the images have none"):
        explain_folder(classifier, tmp_path / "in", out, "gradient", target="label")
    with pytest.raises(InputError, match="Grad-CAM maps are non-negative"):
        explain_folder(
            classifier, tmp_path / "in", out, "gradcam", render=RenderOptions("diverging")
        )
    with pytest.raises(InputError, match="Unknown saliency method"):
        explain_folder(classifier, tmp_path / "in", out, "no_such_method")
    assert not out.exists()
