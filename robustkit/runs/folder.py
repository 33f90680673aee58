"""The folder-run template: a resumable pass over an image folder, one batch at a time.

A run plans one set of output files per image, refuses to overwrite inputs or (without
``overwrite``) earlier results, keeps a journal of finished rows so an interrupted run resumes
exactly where it stopped, and ends with a report. Subclasses only say what one batch produces.
Progress goes to a ``progress(done, total)`` callback; notes and warnings go to ``logging``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from robustkit.errors import InputError, OutputExistsError
from robustkit.io import (
    ImageBatch,
    ImageFolder,
    RunJournal,
    remove_temp_files,
    to_jsonable,
    write_json,
)
from robustkit.io.labels import class_index, folder_class_names
from robustkit.models import Classifier, weights_digest
from robustkit.runs.options import (
    ImageOptions,
    ModelSource,
    OutputOptions,
    describe_model,
    open_images,
)
from robustkit.runs.outputs import (
    plan_outputs,
    refuse_overwrite,
    refuse_overwriting_inputs,
    refuse_writing_outside,
)

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
Progress = Callable[[int, int], None]  # (images handled so far, images this run handles)
Row = dict[str, Any]


@dataclass(frozen=True)
class RunStats:
    """What this one process did of a folder job that may have been resumed.

    Not written to ``report.json``, which holds results only: a job finished by a resumed run
    writes the report an uninterrupted run writes, timings aside.

    Attributes:
        resumed: True when an earlier run had already finished some images.
        images_done_before: images an earlier run had finished (their rows came from the journal).
        images_processed: images this run read and processed.
    """

    resumed: bool
    images_done_before: int
    images_processed: int


@dataclass
class FolderReport:
    """The outcome of a folder run: ``out/report.json`` (``summary`` and ``rows``) and this run's
    own counts.

    Attributes:
        out: the output folder.
        rows: one row per file found, sorted by path; ``status`` is the run's verb
            ("attacked", "explained") or "skipped" (with a ``reason``).
        summary: counts and figures over the rows, every setting, timing and library versions.
        this_run: what this process did (not in ``report.json``).
    """

    out: Path
    rows: list[Row]
    summary: dict[str, Any]
    this_run: RunStats

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON types: ``{"summary": ..., "images": rows}``."""
        return to_jsonable({"summary": self.summary, "images": self.rows})


@dataclass(frozen=True)
class RunInputs:
    """What a folder run reads: the classifier, its image folder, and how both were given."""

    classifier: Classifier
    folder: ImageFolder
    model: str  # the model file as given, or the Keras model's name
    images: str  # the image folder or file as given
    image_options: ImageOptions

    @classmethod
    def open(
        cls,
        model: ModelSource,
        classifier: Classifier,
        images: str | os.PathLike[str],
        image_options: ImageOptions,
    ) -> RunInputs:
        """Open ``images`` for ``classifier`` (loaded from ``model``)."""
        folder = open_images(images, classifier, image_options)
        return cls(
            classifier, folder, describe_model(model, classifier), os.fspath(images), image_options
        )

    @property
    def class_names(self) -> list[str] | None:
        """Class names known for this run: a names file, else the class folders' names."""
        if self.folder.class_names is not None:
            return self.folder.class_names
        if self.folder.label_source == "class folders":
            return folder_class_names(self.folder.root)
        return None

    def class_of(self, value: int | str, what: str) -> int:
        """The class ``value`` means (an index, or a name from the class names) for ``what``."""
        index = class_index(str(value), self.class_names, what)
        num_classes = self.classifier.num_classes
        if not 0 <= index < num_classes:
            raise InputError(f"{what} {value!r}: the model has classes 0..{num_classes - 1}.")
        return index


def skip_row(relative: str, reason: str) -> Row:
    """The report row of a file that was not processed."""
    return {"path": relative, "status": "skipped", "reason": reason}


def summarize_notes(notes: Sequence[tuple[str, str]]) -> list[str]:
    """One line per distinct note: 'alpha channel dropped: 3 images (e.g. a/b.png)'."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for relative, note in notes:
        grouped[note].append(relative)
    return [
        f"{note}: {len(paths)} image{'s' if len(paths) > 1 else ''} (e.g. {paths[0]})"
        for note, paths in grouped.items()
    ]


def environment_versions() -> dict[str, str]:
    """Versions of robustkit and the libraries that shape its numbers."""
    import keras
    import numpy
    import PIL
    import tensorflow

    import robustkit

    return {
        "robustkit": robustkit.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


class FolderRun:
    """Template of a resumable pass over an image folder, writing files under ``output.out``.

    Subclasses set ``journal_name``, ``report_names`` and ``status`` and implement
    :meth:`settings`, :meth:`process_batch` and :meth:`summarize`. Batches are fixed slices of
    the sorted file list, so a resumed run processes exactly the batches an uninterrupted run
    would; rows reach the journal only after their batch's files are written. Call
    :meth:`execute` while holding the output folder's lock (``locked_output``).
    """

    journal_name: ClassVar[str]
    report_names: ClassVar[tuple[str, ...]] = (REPORT_JSON,)
    status: ClassVar[str]  # the row status of a processed image

    def __init__(
        self, inputs: RunInputs, output: OutputOptions, *, suffixes: Sequence[str]
    ) -> None:
        self.inputs = inputs
        self.classifier = inputs.classifier
        self.folder = inputs.folder
        self.out = output.out
        self.overwrite = output.overwrite
        self.batch_size = inputs.image_options.batch_size
        self.names = inputs.class_names
        self.plan = plan_outputs([entry.relative for entry in self.folder.entries], suffixes)
        self.journal = RunJournal(self.out / self.journal_name)
        self.first_index = 0  # index in the folder of the batch being processed
        refuse_writing_outside(self.output_files(), self.out)
        refuse_overwriting_inputs(self.output_files(), [e.path for e in self.folder.entries])

    # ----------------------------------------------------------------- what subclasses say

    def settings(self) -> dict[str, Any]:
        """The run's own settings (JSON-able) that a resumed run must share."""
        raise NotImplementedError

    def process_batch(self, batch: ImageBatch) -> list[Row]:
        """Write the outputs of one decoded batch; one report row per image."""
        raise NotImplementedError

    def summarize(self, rows: list[Row]) -> dict[str, Any]:
        """The run's own summary figures and settings over all rows."""
        raise NotImplementedError

    def write_reports(self, report: FolderReport) -> None:
        """Write the report files (``report_names``) of a finished run."""
        write_json(self.out / REPORT_JSON, report.to_dict())

    # ----------------------------------------------------------------- the template

    def output_files(self) -> list[Path]:
        """Every file this run writes: per-image outputs, then the reports."""
        files = [self.out / name for outputs in self.plan.values() for name in outputs]
        return [*files, *(self.out / name for name in self.report_names)]

    def all_settings(self) -> dict[str, Any]:
        """Everything a resumed run must share: model, images, how they are read, the run's."""
        return {
            "model_weights_sha256": weights_digest(self.classifier),
            "input_shape": list(self.classifier.input_shape),
            "preprocessing": self.classifier.preprocessing.to_dict(),
            "images": str(Path(self.inputs.images).resolve()),
            **self.inputs.image_options.to_dict(),
            **self.settings(),
        }

    def resume_or_start(self) -> dict[str, Row]:
        """Rows already finished by an interrupted run with the same settings (resume), or {}
        after checking that nothing would be overwritten and starting a fresh journal."""
        settings = self.all_settings()
        if self.journal.exists() and not self.overwrite:
            header, rows = self.journal.recover()
            expected = json.loads(json.dumps(to_jsonable(settings)))
            changed = sorted(key for key in expected if header.get(key) != expected[key])
            if changed:
                raise OutputExistsError(
                    f"{self.out} holds an unfinished run with other settings "
                    f"({', '.join(changed)} differ). Rerun with the same options to finish it, "
                    "or pass overwrite=True (CLI: --overwrite) to start over."
                )
            remove_temp_files(self.out)
            logger.info(
                "resuming an interrupted run in %s: %d files already done.", self.out, len(rows)
            )
            return {row["path"]: row for row in rows}
        if not self.overwrite:
            refuse_overwrite(self.output_files(), self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        remove_temp_files(self.out)
        self.journal.start(settings)
        return {}

    def process(self, done: dict[str, Row], progress: Progress | None) -> tuple[list[Row], int]:
        """Process every batch with a file not finished in ``done``; (new rows, images done)."""
        entries = self.folder.entries
        chunks = [entries[i : i + self.batch_size] for i in range(0, len(entries), self.batch_size)]
        pending = [
            (index, chunk)
            for index, chunk in enumerate(chunks)
            if any(e.relative not in done for e in chunk)
        ]
        total = sum(len(chunk) for _, chunk in pending)
        tell = progress or (lambda handled, total: None)
        tell(0, total)
        rows: list[Row] = []
        processed = handled = 0
        notes: list[tuple[str, str]] = []
        for index, chunk in pending:
            self.first_index = index * self.batch_size
            batch = self.folder.read_batch(chunk)
            notes.extend(batch.notes)
            batch_rows = [skip_row(skip.relative, skip.reason) for skip in batch.skipped]
            for skip in batch.skipped:
                logger.warning("skipped %s: %s", skip.relative, skip.reason)
            if batch.entries:
                batch_rows += self.process_batch(batch)
                processed += len(batch.entries)
            batch_rows = [row for row in batch_rows if row["path"] not in done]
            self.journal.append(batch_rows)
            rows += batch_rows
            handled += len(chunk)
            tell(handled, total)
        for line in summarize_notes(notes):
            logger.info(line)
        return rows, processed

    def execute(self, progress: Progress | None = None) -> FolderReport:
        """Run (or finish) the pass, write the reports, remove the journal; the report."""
        done = self.resume_or_start()
        pre_skipped = [s for s in self.folder.skipped if s.relative not in done]
        for skip in pre_skipped:
            logger.warning("skipped %s: %s", skip.relative, skip.reason)
        start = time.perf_counter()
        new_rows, processed = self.process(done, progress)
        seconds = time.perf_counter() - start
        rows = sorted(
            [*done.values(), *(skip_row(s.relative, s.reason) for s in pre_skipped), *new_rows],
            key=lambda row: row["path"],
        )
        summary = {
            **self.summarize(rows),
            "seconds": seconds,
            "images_per_second": processed / seconds if seconds > 0 else math.nan,
            "model": self.inputs.model,
            "images": self.inputs.images,
            "class_names": self.names,
            "preprocessing": self.classifier.preprocessing.to_dict(),
            "resize": self.inputs.image_options.resize,
            "versions": environment_versions(),
        }
        this_run = RunStats(bool(done), len(done), processed)
        report = FolderReport(self.out, rows, summary, this_run)
        self.write_reports(report)
        self.journal.remove()
        return report
