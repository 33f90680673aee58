"""``explain_folder`` with several methods, metrics and explanations under attack: the same
bytes whatever the batch size, an interrupted run resumed gives the uninterrupted run's files
and rows, changed settings are refused, and options go to the methods that take them."""

import json

import numpy as np
import pytest
from cli_helpers import class_tree, tiny_cnn

from robustkit.attacks import PGD
from robustkit.errors import InputError, OutputExistsError
from robustkit.io import from_uint8, read_image
from robustkit.models import Classifier
from robustkit.runs import ImageOptions, RunStats, UnderAttack, explain_folder
from robustkit.saliency import explanation_shift, method_keywords, metric_table

METHODS = ["smoothgrad", "integrated_gradients"]
OPTIONS = {"samples": 3, "steps": 4, "seed": 5}
METRICS = ["mu_fidelity", "stability", "sparseness"]


@pytest.fixture(scope="module")
def classifier():
    return Classifier(tiny_cnn(1, seed=2))


def run(classifier, images, out, batch_size, progress=None):
    return explain_folder(
        classifier,
        images,
        out,
        METHODS,
        target="label",
        metrics=METRICS,
        metric_samples=3,
        under_attack=UnderAttack(PGD("linf", 0.1, steps=3, seed=2), top_k=0.25),
        image_options=ImageOptions(batch_size=batch_size),
        progress=progress,
        **OPTIONS,
    )


def files(out):
    """Every file the run wrote but its report (which holds timings), by relative path."""
    written = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name != "report.json"]
    return {p.relative_to(out): p.read_bytes() for p in written}


def test_batch_size_does_not_change_maps_metrics_or_attack(classifier, tmp_path):
    class_tree(tmp_path / "in")
    whole = run(classifier, tmp_path / "in", tmp_path / "whole", batch_size=6)
    parts = run(classifier, tmp_path / "in", tmp_path / "parts", batch_size=4)
    assert files(tmp_path / "whole") == files(tmp_path / "parts")  # maps, panels, adversarials
    assert whole.rows == parts.rows
    assert whole.summary["methods"] == parts.summary["methods"]
    # against the library called on the whole folder at once
    rows = whole.rows
    x = from_uint8(np.stack([read_image(tmp_path / "in" / r["path"], channels=1)[0] for r in rows]))
    labels = np.array([row["label"] for row in rows])
    for method in METHODS:
        options = {key: value for key, value in OPTIONS.items() if key in method_keywords(method)}
        shift = explanation_shift(
            classifier, x, labels, method, PGD("linf", 0.1, steps=3, seed=2), target=labels,
            top_k=0.25, **options,
        )  # fmt: skip
        entries = [row["methods"][method] for row in rows]
        maps = np.stack([np.load(tmp_path / "whole" / e["map"]) for e in entries])
        np.testing.assert_allclose(maps, shift.clean.maps, rtol=1e-5, atol=1e-7)
        assert [e["spearman"] for e in entries] == pytest.approx(shift.spearman.tolist(), abs=1e-9)
        assert [e["top_k_overlap"] for e in entries] == shift.top_k_overlap.tolist()
        columns = metric_table(
            classifier, x, shift.clean, method, METRICS, method_options=options, samples=3
        )
        for name, values in columns.items():
            got = [e["metrics"][name] for e in entries]
            np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-7)


def test_an_interrupted_run_resumes_to_the_same_files(classifier, tmp_path):
    class_tree(tmp_path / "in")
    complete = run(classifier, tmp_path / "in", tmp_path / "complete", batch_size=2)

    def interrupt(done, total):
        if done == 4:
            raise KeyboardInterrupt

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        run(classifier, tmp_path / "in", out, batch_size=2, progress=interrupt)
    journal = out / ".robustkit-saliency-journal.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 4  # header and two batches' rows
    calls = []
    resumed = run(classifier, tmp_path / "in", out, 2, lambda *done: calls.append(done))
    assert calls == [(0, 2), (2, 2)]  # only the last batch was left
    assert resumed.this_run == RunStats(resumed=True, images_done_before=4, images_processed=2)
    assert not journal.exists()
    assert files(tmp_path / "complete") == files(out)
    assert complete.rows == resumed.rows
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["summary"]["methods"] == json.loads(json.dumps(complete.summary["methods"]))


def test_changed_methods_are_refused_on_resume_and_options_are_routed(classifier, tmp_path):
    class_tree(tmp_path / "in")
    out = tmp_path / "out"

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(classifier, tmp_path / "in", out, batch_size=2, progress=interrupt)
    with pytest.raises(OutputExistsError, match="methods"):
        explain_folder(classifier, tmp_path / "in", out, "gradient,smoothgrad", samples=3)
    with pytest.raises(InputError, match=r"'steps' .*applies to integrated_gradients only"):
        explain_folder(classifier, tmp_path / "in", tmp_path / "o", "gradient,rise", steps=3)
    with pytest.raises(InputError, match="Unknown saliency metric"):
        explain_folder(classifier, tmp_path / "in", tmp_path / "o", "gradient", metrics="nope")
    with pytest.raises(InputError, match="top_k"):
        UnderAttack(PGD("linf", 0.1), top_k=1.5)
    assert not (tmp_path / "o").exists()
