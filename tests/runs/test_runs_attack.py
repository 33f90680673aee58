"""``robustkit.runs.attack_folder`` from Python: the saved PNGs are what was evaluated, runs are
deterministic whatever the batch size, and an interrupted run resumes to the same bytes."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import class_tree, interrupt_at_second_batch, tiny_cnn

from robustkit.attacks import PGD, is_robust
from robustkit.errors import InputError, OutputExistsError
from robustkit.io import from_uint8, read_image
from robustkit.models import Classifier
from robustkit.runs import (
    ImageOptions,
    ModelOptions,
    OutputOptions,
    RunStats,
    attack_folder,
    load_model,
    saved_codes,
)
from robustkit.runs import attack as attack_module
from robustkit.runs.lock import LOCK_NAME

EPS = 0.3  # 76.5 grid steps: saved pixels move by at most 76


@pytest.fixture(scope="module")
def classifier():
    return Classifier(tiny_cnn(1))


@pytest.fixture
def images(tmp_path):
    """Nine 8x8 grayscale PNGs in class folders ant/, bee/, cat/."""
    class_tree(tmp_path / "in", per_class=3)
    return tmp_path / "in"


def attack():
    return PGD("linf", EPS, steps=5, quantize=255, seed=3)


def codes_of(folder, relatives):
    return np.stack([read_image(folder / relative, channels=1)[0] for relative in relatives])


def png_bytes(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def test_saved_pngs_reproduce_the_reported_predictions(classifier, images, tmp_path):
    calls = []
    out = tmp_path / "adv"
    report = attack_folder(
        classifier,
        images,
        out,
        attack(),
        image_options=ImageOptions(batch_size=4),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(0, 9), (4, 9), (8, 9), (9, 9)]
    assert report.to_dict() == json.loads((out / "report.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "ant",
        "bee",
        "cat",
        "report.csv",
        "report.json",
    ]
    rows = report.rows
    assert [row["status"] for row in rows] == ["attacked"] * 9
    saved = codes_of(out, [row["output"] for row in rows])
    clean = codes_of(images, [row["path"] for row in rows])
    logits = classifier.predict_logits(from_uint8(saved))
    assert [row["adv_pred"] for row in rows] == logits.argmax(axis=1).tolist()
    assert [row["adv_confidence"] for row in rows] == pytest.approx(
        tf.nn.softmax(logits).numpy().max(axis=1).tolist(), abs=1e-7
    )
    labels = np.array([row["label"] for row in rows])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [row["success"] for row in rows] == (logits.argmax(axis=1) != labels).tolist()
    steps = np.abs(saved.astype(int) - clean.astype(int)).reshape(9, -1).max(axis=1)
    assert steps.max() <= 76
    assert [row["linf"] for row in rows] == (steps / 255).tolist()
    clean_pred = np.array([row["clean_pred"] for row in rows])
    robust = is_robust(clean_pred == labels, logits.argmax(axis=1) != labels)
    assert report.summary["robust_accuracy"] == robust.mean()
    assert report.this_run == RunStats(resumed=False, images_done_before=0, images_processed=9)
    # One call on all nine images gives the same bytes and steps: per-example keys, not per batch.
    x = from_uint8(clean)
    direct = attack()(classifier, x, labels)
    np.testing.assert_array_equal(saved, saved_codes(attack(), x, direct.x_adv))
    assert [row["gradient_steps"] for row in rows] == direct.steps.tolist()
    assert report.summary["gradient_steps"] == direct.gradient_steps > 0


def test_same_seed_same_bytes_whatever_the_batch_size(classifier, images, tmp_path):
    for name, batch_size in (("small", 2), ("large", 9)):
        attack_folder(
            classifier,
            images,
            tmp_path / name,
            attack(),
            image_options=ImageOptions(batch_size=batch_size),
        )
    assert png_bytes(tmp_path / "small") == png_bytes(tmp_path / "large")
    assert len(png_bytes(tmp_path / "small")) == 9


def test_resume_after_a_partial_journal_gives_identical_bytes(
    classifier, images, tmp_path, monkeypatch, caplog
):
    options = ImageOptions(batch_size=4)
    full = attack_folder(
        classifier, images, tmp_path / "full", attack(), save_perturbation=True,
        image_options=options,
    )  # fmt: skip

    interrupt_at_second_batch(monkeypatch)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        attack_folder(
            classifier, images, out, attack(), save_perturbation=True, image_options=options
        )
    monkeypatch.undo()  # the second batch goes through again
    journal = out / attack_module.JOURNAL
    assert len(journal.read_text().splitlines()) == 1 + 4  # header and the first batch
    assert not (out / LOCK_NAME).exists() and not (out / "report.json").exists()
    with journal.open("a") as stream:
        stream.write('{"path": "bee/1.png", "stat')  # a row cut off by a killed process

    for other, changed in (
        (PGD("linf", 0.1, steps=5, quantize=255, seed=3), "attack"),
        (attack(), "model_weights_sha256"),
    ):
        model = classifier if changed == "attack" else Classifier(tiny_cnn(1, seed=5))
        with pytest.raises(OutputExistsError, match=f"other settings \\({changed} differ\\)"):
            attack_folder(model, images, out, other, save_perturbation=True, image_options=options)

    with caplog.at_level(logging.INFO, logger="robustkit.runs"):
        resumed = attack_folder(
            classifier, images, out, attack(), save_perturbation=True, image_options=options
        )
    assert "resuming an interrupted run" in caplog.text and "4 files already done" in caplog.text
    assert resumed.this_run == RunStats(resumed=True, images_done_before=4, images_processed=5)
    assert resumed.rows == full.rows
    assert png_bytes(out) == png_bytes(tmp_path / "full") and len(png_bytes(out)) == 18
    assert not journal.exists() and not (out / LOCK_NAME).exists()


def test_skipped_files_are_logged_and_reported_not_printed(
    classifier, images, tmp_path, caplog, capsys
):
    (images / "ant" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.INFO, logger="robustkit.runs"):
        report = attack_folder(classifier, images, tmp_path / "adv", attack())
    assert capsys.readouterr().out == ""
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("robustkit.runs")
    ]
    assert warnings == ["skipped ant/broken.png: not a readable image (Pillow cannot identify it)."]
    assert report.rows[3] == {
        "path": "ant/broken.png",
        "status": "skipped",
        "reason": "not a readable image (Pillow cannot identify it).",
    }
    assert report.summary["images_skipped"] == 1 and report.summary["images_attacked"] == 9
    assert any("76.5 steps of the 8-bit grid" in r.getMessage() for r in caplog.records)


def test_targets_by_class_name_and_refusals(classifier, images, tmp_path):
    report = attack_folder(classifier, images, tmp_path / "t", attack(), target="bee")
    assert report.summary["target"] == 1
    assert [row["target"] for row in report.rows] == [1] * 9
    assert [row["success"] for row in report.rows] == [row["adv_pred"] == 1 for row in report.rows]
    with pytest.raises(InputError, match="neither a class index nor one of the class names"):
        attack_folder(classifier, images, tmp_path / "w", attack(), target="wasp")
    assert not (tmp_path / "w").exists()  # a refused run leaves no folder behind
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        attack_folder(classifier, images, tmp_path / "t", attack())
    again = attack_folder(
        classifier, images, OutputOptions(tmp_path / "t", overwrite=True), attack()
    )
    assert again.summary["target"] is None


def test_model_options_apply_to_files_and_keras_models_only(classifier, tmp_path):
    with pytest.raises(InputError, match="carries its own preprocessing"):
        load_model(classifier, ModelOptions(input_scale=255.0))
    assert load_model(classifier) is classifier
    wrapped = load_model(tiny_cnn(1), ModelOptions(input_scale=2.0, mean=(0.5,)))
    assert wrapped.preprocessing.to_dict() == {
        "scale": 2.0, "offset": 0.0, "mean": [0.5], "std": None
    }  # fmt: skip
