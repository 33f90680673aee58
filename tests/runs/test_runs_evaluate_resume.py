"""``evaluate_folder`` interrupted and rerun: it resumes from its checkpoint in the output folder
to the uninterrupted reports, refuses other settings until told to start over, and leaves only
the reports behind."""

import json

import pytest
from cli_helpers import class_tree, tiny_cnn

from robustkit.attacks import PGD
from robustkit.errors import OutputExistsError
from robustkit.evaluation import SuiteAttack
from robustkit.evaluation import main_pass as main_pass_module
from robustkit.models import Classifier
from robustkit.runs import ImageOptions, OutputOptions, evaluate_folder
from robustkit.runs.evaluate import CHECKPOINT

SETTINGS = {
    "suite": [SuiteAttack("pgd", PGD, {"steps": 3}), SuiteAttack("pgd-2", PGD, {"steps": 2})],
    "checks": [4],
    "seed": 0,
}
OPTIONS = ImageOptions(batch_size=1)  # 6 images: chunks of 4 (4 batches of 1) and 2


def reports(out):
    data = json.loads((out / "report.json").read_text())
    data["timing"] = None
    for outcome in data["outcomes"]:
        outcome["wall_time_s"] = None
    return data


def test_an_interrupted_evaluation_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    class_tree(tmp_path / "in")
    classifier = Classifier(tiny_cnn(1, seed=2))

    def run(out, eps=(0.1, 0.2), **options):
        return evaluate_folder(
            classifier, tmp_path / "in", out, "linf", list(eps), image_options=OPTIONS,
            **SETTINGS, **options,
        )  # fmt: skip

    run(tmp_path / "full")
    original, calls = main_pass_module.run_attack, []

    def interrupt_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # chunk 1's first cell; chunk 0's 4 cells are saved
            raise KeyboardInterrupt
        original(*args, **kwargs)

    monkeypatch.setattr(main_pass_module, "run_attack", interrupt_the_fifth)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT]
    with pytest.raises(OutputExistsError, match=r"other settings \(attacks, epsilons differ\)"):
        run(out, eps=(0.1,))
    calls.clear()
    run(out)  # attacks only chunk 1's 4 cells, so the fifth call never comes
    assert len(calls) == 4
    assert reports(out) == reports(tmp_path / "full")
    names = ["report.json", "report.md", "robustness_curve.png"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert (out / "robustness_curve.png").read_bytes() == (
        tmp_path / "full" / "robustness_curve.png"
    ).read_bytes()

    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        run(OutputOptions(out, overwrite=True))
    report = run(OutputOptions(out, overwrite=True), eps=(0.1,))  # starts over, other settings
    assert report.epsilons == [0.1] and not (out / CHECKPOINT).exists()
