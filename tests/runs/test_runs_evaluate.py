"""``robustkit.runs.evaluate_folder`` from Python: a labelled image folder read exactly, the same
numbers as ``robustkit.evaluation.evaluate`` on those pixels, and the reports on disk."""

import json

import numpy as np
import pytest
from cli_helpers import class_tree, tiny_cnn

from robustkit.errors import InputError, OutputExistsError
from robustkit.evaluation import evaluate
from robustkit.io import from_uint8, read_image
from robustkit.models import Classifier
from robustkit.runs import ImageOptions, evaluate_folder, read_labelled_images


def test_folder_evaluation_matches_the_evaluator_on_the_same_pixels(tmp_path):
    relatives = class_tree(tmp_path / "in")
    (tmp_path / "in" / "ant" / "broken.png").write_bytes(b"not a png")
    classifier = Classifier(tiny_cnn(1, seed=4))
    options = ImageOptions(batch_size=4)
    x, y = read_labelled_images(tmp_path / "in", classifier, options)
    codes = np.stack([read_image(tmp_path / "in" / r, channels=1)[0] for r in relatives])
    np.testing.assert_array_equal(x, from_uint8(codes))
    assert y.tolist() == [0, 0, 1, 1, 2, 2]

    settings = {"suite": "quick", "checks": None, "seed": 1}
    out = tmp_path / "eval"
    report = evaluate_folder(
        classifier, tmp_path / "in", out, "linf", [0.1, 0.3], image_options=options,
        save_adversarial=True, **settings,
    )  # fmt: skip
    direct = evaluate(classifier, (x, y), "linf", [0.1, 0.3], batch_size=4, **settings)
    assert report.robust_accuracy == direct.robust_accuracy
    assert report.clean_accuracy == direct.clean_accuracy
    assert (
        json.loads((out / "report.json").read_text())["robust_accuracy"] == direct.robust_accuracy
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "adversarial.npz", "report.json", "report.md", "robustness_curve.png"
    ]  # fmt: skip
    with np.load(out / "adversarial.npz") as saved:
        assert saved["x_adv"].shape == (2, 6, 8, 8, 1) and saved["y"].tolist() == y.tolist()
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        evaluate_folder(classifier, tmp_path / "in", out, "linf", [0.1], **settings)


def test_unlabelled_images_are_refused(tmp_path):
    class_tree(tmp_path / "in")
    classifier = Classifier(tiny_cnn(1))
    with pytest.raises(InputError, match="robust accuracy needs true labels"):
        evaluate_folder(
            classifier, tmp_path / "in", tmp_path / "eval", "linf", [0.1],
            image_options=ImageOptions(folder_labels=False),
        )  # fmt: skip
    assert not (tmp_path / "eval").exists()
