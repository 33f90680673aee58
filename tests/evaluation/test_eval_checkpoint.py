"""Evaluations in chunks, streamed and checkpointed: interrupted at several (chunk, eps, attack)
cells and rerun with the same checkpoint, `evaluate` gives the uninterrupted report byte for
byte (timings aside) without redoing saved cells; chunking does not change the numbers; a
streamed source is read one chunk at a time; a checkpoint of other settings is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from eval_helpers import healthy, mislabelled_quadrants

from robustkit.attacks import PGD, Square
from robustkit.errors import InputError, OutputExistsError
from robustkit.evaluation import RobustnessReport, SuiteAttack, evaluate, write_report
from robustkit.evaluation import main_pass as main_pass_module
from robustkit.evaluation.sources import STREAM_CHUNK_BATCHES

SUITE = [
    SuiteAttack("pgd-ce", PGD, {"steps": 6, "rel_step_size": 0.25}),
    SuiteAttack("square", Square, {"queries": 30}),
]
EPSILONS = [0.15, 0.3]
# every check but 8 (the costly doubled budget): the checks that read images read them back
CHECKS = [1, 2, 3, 4, 5, 6, 7, 9]
OPTIONS = dict(suite=SUITE, seed=2, batch_size=4, checks=CHECKS, check_samples=6, per_example=True)
CHUNK = 8  # 20 examples: chunks of 8, 8, 4; 3 chunks x 2 eps x 2 attacks = 12 cells
CELLS = 12


@pytest.fixture(scope="module")
def data():
    return mislabelled_quadrants(20, seed=4)


def without_timings(report: RobustnessReport) -> RobustnessReport:
    outcomes = [dataclasses.replace(o, wall_time_s=0.0) for o in report.outcomes]
    return dataclasses.replace(report, timing=dict.fromkeys(report.timing, 0.0), outcomes=outcomes)


def report_files(report: RobustnessReport, folder) -> dict[str, bytes]:
    """The bytes of report.json, report.md and robustness_curve.png, timings zeroed."""
    write_report(without_timings(report), folder, overwrite=True)
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    report = evaluate(healthy(), data, "linf", EPSILONS, chunk_size=CHUNK, **OPTIONS)
    return report, report_files(report, tmp_path_factory.mktemp("uninterrupted"))


class Interrupted(Exception):
    pass


def counting_attacks(monkeypatch, stop_after: int | None) -> list[int]:
    """Count the cells the main pass attacks; raise Interrupted inside the call that would
    finish cell ``stop_after`` of this run (its work is lost, as in a kill mid-attack)."""
    calls: list[int] = []
    original = main_pass_module.run_attack

    def run_attack(*args, **kwargs):
        calls.append(1)
        original(*args, **kwargs)
        if len(calls) == stop_after:
            raise Interrupted

    monkeypatch.setattr(main_pass_module, "run_attack", run_attack)
    return calls


def test_interrupted_twice_then_resumed_gives_the_same_report(
    data, uninterrupted, tmp_path, monkeypatch
):
    checkpoint = tmp_path / "checkpoint"
    attacked = []
    for stop_after in (3, 6, None):  # mid-way through chunk 0, then in chunk 1, then to the end
        calls = counting_attacks(monkeypatch, stop_after)
        if stop_after is None:
            report = evaluate(
                healthy(), data, "linf", EPSILONS, chunk_size=CHUNK, checkpoint_dir=checkpoint,
                **OPTIONS,
            )  # fmt: skip
        else:
            with pytest.raises(Interrupted):
                evaluate(
                    healthy(), data, "linf", EPSILONS, chunk_size=CHUNK,
                    checkpoint_dir=checkpoint, **OPTIONS,
                )  # fmt: skip
        attacked.append(len(calls))
    # each saved cell is attacked once; the one each interruption lost is attacked again
    assert attacked == [3, 6, CELLS - (3 - 1) - (6 - 1)]
    assert report_files(report, tmp_path / "resumed") == uninterrupted[1]
    np.testing.assert_array_equal(report.adversarial_images, uninterrupted[0].adversarial_images)
    # a rerun over a finished checkpoint attacks nothing and reports the same again
    calls = counting_attacks(monkeypatch, None)
    again = evaluate(
        healthy(), data, "linf", EPSILONS, chunk_size=CHUNK, checkpoint_dir=checkpoint, **OPTIONS
    )
    assert calls == [] and report_files(again, tmp_path / "again") == uninterrupted[1]


def test_chunking_does_not_change_the_report(data, uninterrupted, tmp_path):
    whole = evaluate(healthy(), data, "linf", EPSILONS, **OPTIONS)
    assert report_files(whole, tmp_path) == uninterrupted[1]


class CountingSource:
    """Examples behind the ExampleSource interface only, recording how many images each read
    asks for."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self._x, self.labels = x, y
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, indices: np.ndarray) -> np.ndarray:
        self.reads.append(len(indices))
        return self._x[indices]

    def identity(self) -> dict:
        return {"source": "counting"}


def test_a_streamed_source_is_read_a_chunk_at_a_time(data, uninterrupted):
    source = CountingSource(*data)
    streamed = evaluate(healthy(), source, "linf", EPSILONS, chunk_size=CHUNK, **OPTIONS)
    assert without_timings(streamed).to_dict() == without_timings(uninterrupted[0]).to_dict()
    np.testing.assert_array_equal(streamed.adversarial_images, uninterrupted[0].adversarial_images)
    assert source.reads[:3] == [8, 8, 4]  # the main pass reads each chunk once
    piece = STREAM_CHUNK_BATCHES * OPTIONS["batch_size"]  # what the checks read at once
    assert max(source.reads) <= max(CHUNK, piece, OPTIONS["check_samples"])


def test_a_checkpoint_of_other_settings_is_refused(data, tmp_path):
    options = dict(OPTIONS, checks=None, return_images=False, chunk_size=CHUNK)
    options["checkpoint_dir"] = tmp_path
    evaluate(healthy(), data, "linf", [0.15], **options)
    with pytest.raises(
        OutputExistsError, match=r"other settings \(attacks, epsilons, seed differ\)"
    ):
        evaluate(healthy(), data, "linf", [0.2], **dict(options, seed=3))
    x, y = data
    with pytest.raises(OutputExistsError, match=r"\(examples differ\)"):
        evaluate(healthy(), (x[::-1].copy(), y[::-1].copy()), "linf", [0.15], **options)


def test_bad_chunk_sizes_are_refused(data):
    with pytest.raises(InputError, match="chunk_size must be >= 1"):
        evaluate(healthy(), data, "linf", [0.1], chunk_size=0, checks=None)
