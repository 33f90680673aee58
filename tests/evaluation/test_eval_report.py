"""Reports: JSON follows its versioned schema and round-trips; Markdown and the PNG curve."""

import copy
import json

import numpy as np
import pytest
from eval_helpers import SHAPE, healthy, healthy_report, mislabelled_quadrants
from PIL import Image

from robustkit import InputError, OutputExistsError
from robustkit.evaluation import (
    REPORT_SCHEMA,
    SCHEMA_VERSION,
    RobustnessReport,
    report_markdown,
    robustness_curve,
    validate_report,
    write_report,
)
from robustkit.evaluation.render import (
    BOTTOM,
    COLORS,
    HEIGHT,
    LEFT,
    REPORT_FILES,
    RIGHT,
    TOP,
    WIDTH,
)


def test_report_json_follows_the_schema_and_round_trips() -> None:
    report = healthy_report()
    document = json.loads(report.to_json())
    validate_report(document)
    assert document["schema_version"] == SCHEMA_VERSION == 2
    back = RobustnessReport.from_json(report.to_json())
    assert back.to_json() == report.to_json()
    for name, value in report.to_numpy().items():
        if name != "adversarial_images":
            np.testing.assert_array_equal(back.to_numpy()[name], value)
            assert back.to_numpy()[name].dtype == np.asarray(value).dtype
    assert back.adversarial_images is None  # images never go to JSON


def test_the_schema_is_standard_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="optional cross-check of the schema")
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    jsonschema.validate(json.loads(healthy_report().to_json()), REPORT_SCHEMA)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("checks"), "missing 'checks'"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.update(extra=1), "unexpected 'extra'"),
        (lambda d: d["checks"][0].update(verdict="maybe"), "verdict"),
        (lambda d: d.update(clean_accuracy=1.5), "above 1"),
        (lambda d: d["outcomes"][0].update(attacked=True), "expected integer"),
        (lambda d: d["robust_accuracy"].pop(), "one value per eps"),
        (lambda d: d["examples"]["robust"].pop(), "examples.robust"),
    ],
)
def test_validation_names_what_is_wrong(change, message) -> None:
    document = copy.deepcopy(healthy_report().to_dict())
    change(document)
    with pytest.raises(InputError, match=message):
        validate_report(document)
    with pytest.raises(InputError):
        RobustnessReport.from_dict(document)


def test_numpy_view_and_adversarial_images() -> None:
    report = healthy_report()
    x, y = mislabelled_quadrants(48, seed=21)
    arrays = report.to_numpy()
    assert arrays["attack_accuracy"].shape == (2, 2)
    np.testing.assert_array_equal(arrays["robust_accuracy"], arrays["robust"].mean(axis=1))
    images = arrays["adversarial_images"]
    assert images.shape == (2, 48, 8, 8, 1)
    distance = np.abs(images - x[None]).reshape(2, 48, -1).max(axis=2)
    np.testing.assert_allclose(distance, arrays["linf"], atol=1e-6)
    assert np.all(distance <= np.array(report.epsilons)[:, None] * (1 + 1e-5))
    wrong = arrays["clean_pred"] != y
    assert wrong.sum() == 2 and np.all(distance[:, wrong] == 0)  # never attacked
    # the kept images are what the records say they are
    predicted = healthy().predict_logits(images.reshape(-1, *SHAPE)).argmax(1).reshape(2, 48)
    np.testing.assert_array_equal(predicted, arrays["adversarial_pred"])


def test_markdown_lists_accuracies_checks_and_budgets() -> None:
    report = healthy_report()
    text = report_markdown(report)
    worst = " | ".join(f"**{100 * v:.1f}%**" for v in report.robust_accuracy)
    assert f"| **worst case** | {worst} |" in text
    for check in report.checks:
        assert f"| {check.number} | {check.name} | pass | {check.subsample or '-'} |" in text
    assert "| pgd-ce | PGD | no | - | 20 | steps=20, rel_step_size=0.125 |" in text
    assert "| square | Square | yes | - | 100 | queries=100 |" in text


def test_curve_png_and_report_files(tmp_path) -> None:
    report = healthy_report()
    paths = write_report(report, tmp_path)
    assert [path.name for path in paths] == list(REPORT_FILES)
    validate_report(json.loads((tmp_path / "report.json").read_text()))
    assert (tmp_path / "report.md").read_text() == report_markdown(report)
    with Image.open(tmp_path / "robustness_curve.png") as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
        pixels = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(pixels, np.asarray(robustness_curve(report)))
    colors = {tuple(c) for c in pixels.reshape(-1, 3)}
    assert {COLORS[0], COLORS[1], (0, 0, 0)} <= colors  # both attack lines and the worst case
    # the worst-case markers sit where the accuracies put them
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    for eps, accuracy in zip(report.epsilons, report.robust_accuracy, strict=True):
        column = round(x0 + (x1 - x0) * eps / max(report.epsilons))
        row = round(y0 - (y0 - y1) * accuracy)
        assert tuple(pixels[row, column]) == (0, 0, 0)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_report(report, tmp_path)
    write_report(report, tmp_path, overwrite=True)
