"""Helpers every ``robustkit`` command shares: options, model and image loading, output safety,
printing, progress and exit codes.

Exit codes (the same for every command):

- 0: done (files that could not be read are skipped, listed on stderr and in the report);
- 1: failure during the run (including an interruption; rerun the same command to finish);
- 2: usage or input error (bad option, missing or unsafe model, unreadable input, output that
  would overwrite results). Errors print one line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sys
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import click

from robustkit.errors import InputError, OutputExistsError, RobustkitError
from robustkit.io import (
    RESIZE_METHODS,
    ImageBatch,
    ImageFolder,
    RunJournal,
    remove_temp_files,
    to_jsonable,
)
from robustkit.io.labels import class_index

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2

# ----------------------------------------------------------------------------- option types


class NumberType(click.ParamType):
    """A float written as a decimal or a fraction: ``0.3``, ``8/255``."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return float(Fraction(str(value).strip()))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a number (write e.g. 0.3 or 8/255).", param, ctx)


class NumbersType(click.ParamType):
    """Comma-separated numbers, one per channel: ``0.485,0.456,0.406``."""

    name = "numbers"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(Fraction(part.strip())) for part in str(value).split(","))
        except (ValueError, ZeroDivisionError):
            self.fail(f"{value!r} is not a comma-separated list of numbers.", param, ctx)


NUMBER = NumberType()
NUMBERS = NumbersType()


def _stack(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Apply option decorators in the order listed (top to bottom in --help)."""

    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


model_options = _stack(
    click.option(
        "--unsafe-load",
        is_flag=True,
        help="Allow unsafe deserialization (Lambda layers, custom code). Only for files you trust.",
    ),
    click.option(
        "--input-scale",
        type=NUMBER,
        default=1.0,
        show_default=True,
        help="The model expects pixels times this (e.g. 255 for 0..255 inputs); in-graph.",
    ),
    click.option(
        "--mean",
        type=NUMBERS,
        help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.",
    ),
    click.option("--std", type=NUMBERS, help="Per-channel std divided by after the mean."),
)

image_options = _stack(
    click.option(
        "--labels",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="CSV of 'relative path,label' rows (label: class index or name).",
    ),
    click.option(
        "--class-names",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Text file with one class name per line, in model order.",
    ),
    click.option(
        "--folder-labels/--no-folder-labels",
        default=True,
        show_default=True,
        help="Use class subfolders as labels (sorted names -> indices, as Keras does).",
    ),
    click.option(
        "--resize",
        type=click.Choice(list(RESIZE_METHODS)),
        help="Resize images of another size with this method; without it they are refused.",
    ),
    click.option(
        "--strict", is_flag=True, help="Fail on the first unreadable file instead of skipping it."
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=64,
        show_default=True,
        help="Images per batch.",
    ),
)


def output_options(default_out: str) -> Callable[[Callable], Callable]:
    """--out (default ``default_out`` in the current directory), --overwrite, --quiet, --json,
    --debug."""
    return _stack(
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=default_out,
            show_default=True,
            help="Output folder.",
        ),
        click.option("--overwrite", is_flag=True, help="Replace results already in --out."),
        click.option("--quiet", is_flag=True, help="No progress bar, notes or summary."),
        click.option(
            "--json", "json_output", is_flag=True, help="Print the report as JSON on stdout."
        ),
        click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors."),
    )


# ----------------------------------------------------------------------------- errors and output


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {message}", err=True)


def _fail(code: int, message: str, debug: bool) -> NoReturn:
    """Report the exception being handled (one line, or the traceback with --debug) and exit."""
    click.echo(traceback.format_exc().rstrip() if debug else message, err=True)
    raise click.exceptions.Exit(code) from None


def handle_errors(command: Callable[..., int | None]) -> Callable[..., None]:
    """Decorator for command callbacks (which take ``debug``): maps errors to exit codes.

    RobustkitError -> 2, anything else (and Ctrl-C) -> 1, each as one line on stderr; with
    ``debug`` the traceback is printed instead (same exit code). Python warnings print as one
    ``warning:`` line.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        debug = kwargs.get("debug", False)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                code = command(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except RobustkitError as error:
            _fail(EXIT_INPUT, f"error: {error}", debug)
        except KeyboardInterrupt:
            _fail(
                EXIT_FAILURE,
                "error: interrupted; rerun the same command to finish the rest.",
                debug,
            )
        except Exception as error:
            hint = f"error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"
            _fail(EXIT_FAILURE, hint, debug)
        raise click.exceptions.Exit(code or EXIT_OK)

    return wrapper


@dataclass
class Console:
    """Where a command's words go: summary on stdout, warnings/notes/progress on stderr."""

    quiet: bool = False
    json_output: bool = False

    def say(self, message: str = "") -> None:
        """A line of the human summary (stdout; silent with --quiet or --json)."""
        if not (self.quiet or self.json_output):
            click.echo(message)

    def note(self, message: str) -> None:
        """Something the user may want to know (stderr; silent with --quiet)."""
        if not self.quiet:
            click.echo(f"note: {message}", err=True)

    def warn(self, message: str) -> None:
        """Something went wrong but the run goes on (stderr, always)."""
        click.echo(f"warning: {message}", err=True)

    def print_json(self, data: Any) -> None:
        """The machine-readable result on stdout."""
        click.echo(json.dumps(to_jsonable(data), indent=2, allow_nan=False))

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[int], None]]:
        """Yields ``advance(n)``; draws a bar on stderr when it is a terminal and not quiet."""
        if self.quiet or not sys.stderr.isatty():
            yield lambda n: None
            return
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update


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


# ----------------------------------------------------------------------------- inputs


def load_model(
    path: str, *, unsafe_load: bool, input_scale: float, mean: Any, std: Any, console: Console
) -> Any:
    """The model file as a robustkit Classifier on [0, 1] pixels with in-graph preprocessing."""
    from robustkit.models import Preprocessing, load_classifier

    if unsafe_load:
        console.warn("unsafe loading is on: the model file may run code. Only use trusted files.")
    preprocessing = Preprocessing(scale=input_scale, mean=mean, std=std)
    return load_classifier(path, safe_mode=not unsafe_load, preprocessing=preprocessing)


def open_images(
    images: str,
    classifier: Any,
    *,
    labels: Path | None,
    class_names: Path | None,
    folder_labels: bool,
    resize: str | None,
    strict: bool,
) -> ImageFolder:
    """The image folder (or file) read for ``classifier``, headers checked, sizes matched."""
    folder = ImageFolder(
        images,
        image_shape=classifier.input_shape,
        resize=resize,
        labels=labels,
        class_names=class_names,
        folder_labels=folder_labels,
        num_classes=classifier.num_classes,
        strict=strict,
    )
    folder.check_sizes()
    return folder


def class_names_of(folder: ImageFolder) -> list[str] | None:
    """Class names known for this run: a names file, else the class folders' names."""
    if folder.class_names is not None:
        return folder.class_names
    if folder.label_source == "class folders":
        from robustkit.io.labels import folder_class_names

        return folder_class_names(folder.root)
    return None


def parse_class(value: str, folder: ImageFolder, num_classes: int, option: str) -> int:
    """A class given on the command line as an index or a name."""
    index = class_index(value, class_names_of(folder), option)
    if not 0 <= index < num_classes:
        raise InputError(f"{option} {value!r}: the model has classes 0..{num_classes - 1}.")
    return index


# ----------------------------------------------------------------------------- outputs


def check_output_folder(out: Path, images: str) -> None:
    """Refuse an --out that is the input folder, inside it, or an existing file."""
    out_resolved = out.resolve()
    source = Path(images).resolve()
    if out_resolved.exists() and not out_resolved.is_dir():
        raise InputError(f"--out {out} is an existing file; give a folder.")
    if source.is_dir() and (out_resolved == source or out_resolved.is_relative_to(source)):
        raise InputError(
            f"--out {out} is inside the input folder {images}; choose a folder outside it "
            "(outputs would be mixed with inputs and read back as images next time)."
        )


def plan_outputs(relatives: Sequence[str], suffixes: Sequence[str]) -> dict[str, list[str]]:
    """Output paths (relative to --out) for each input: its path without the extension plus
    each suffix, e.g. 'cat/a.jpg' -> ['cat/a.png', 'cat/a.perturbation.png'].

    Inputs that would share a name (a.jpg and a.png) keep their extension in the name
    ('a.jpg.png'); any remaining clash raises InputError.
    """
    stems = [os.path.splitext(relative)[0] for relative in relatives]
    counts: dict[str, int] = defaultdict(int)
    for stem in stems:
        counts[stem] += 1
    plan: dict[str, list[str]] = {}
    taken: set[str] = set()
    for relative, stem in zip(relatives, stems, strict=True):
        keep_extension = counts[stem] > 1 and not relative.lower().endswith(suffixes[0].lower())
        base = relative if keep_extension else stem
        outputs = [base + suffix for suffix in suffixes]
        clash = taken.intersection(outputs)
        if clash:
            raise InputError(f"Two inputs would both be written to {sorted(clash)[0]}; rename one.")
        taken.update(outputs)
        plan[relative] = outputs
    return plan


def refuse_overwrite(paths: Sequence[Path], out: Path) -> None:
    """OutputExistsError when any of ``paths`` exists (the caller checks --overwrite)."""
    existing = [path for path in paths if path.exists()]
    if existing:
        raise OutputExistsError(
            f"--out {out} already holds {len(existing)} of this run's output files (e.g. "
            f"{existing[0]}); pass --overwrite to replace them, or choose another --out."
        )


def refuse_overwriting_inputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Never write over an input file, even with --overwrite."""
    resolved_inputs = {path.resolve() for path in inputs}
    for output in outputs:
        if output.resolve() in resolved_inputs:
            raise InputError(
                f"The output {output} would replace an input image; choose another --out."
            )


# ----------------------------------------------------------------------------- runs over a folder


def skip_row(relative: str, reason: str) -> dict[str, Any]:
    """The report row of a file that was not processed."""
    return {"path": relative, "status": "skipped", "reason": reason}


class FolderRun:
    """A resumable pass over an image folder, one batch at a time, writing files under ``out``.

    Subclasses set ``journal_name``, ``report_names`` and ``progress_label`` and implement
    :meth:`process_batch` (write the batch's outputs, return one report row per image). Batches
    are fixed slices of the sorted file list, so a resumed run processes exactly the batches an
    uninterrupted run would; rows reach the journal only after their batch's files are written.
    """

    journal_name: str = ".robustkit-journal.jsonl"
    report_names: tuple[str, ...] = ("report.json",)
    progress_label: str = "processing"

    def __init__(
        self,
        folder: ImageFolder,
        out: Path,
        *,
        suffixes: Sequence[str],
        batch_size: int,
        console: Console,
    ) -> None:
        self.folder = folder
        self.out = out
        self.batch_size = batch_size
        self.console = console
        self.names = class_names_of(folder)
        self.plan = plan_outputs([entry.relative for entry in folder.entries], suffixes)
        self.journal = RunJournal(out / self.journal_name)
        self.batch_index = 0  # position of the batch being processed in the whole folder

    def output_files(self) -> list[Path]:
        """Every file this run writes: per-image outputs, then the reports."""
        files = [self.out / name for outputs in self.plan.values() for name in outputs]
        return [*files, *(self.out / name for name in self.report_names)]

    def process_batch(self, batch: ImageBatch) -> list[dict[str, Any]]:
        """Write the outputs of one decoded batch; one report row per image."""
        raise NotImplementedError

    def run(self, done: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], int, float]:
        """Process every batch with a file not finished in ``done`` (rows by path).

        Returns (new rows, images processed, seconds).
        """
        entries = self.folder.entries
        chunks = [entries[i : i + self.batch_size] for i in range(0, len(entries), self.batch_size)]
        pending = [
            (index, chunk)
            for index, chunk in enumerate(chunks)
            if any(e.relative not in done for e in chunk)
        ]
        rows: list[dict[str, Any]] = []
        processed = 0
        notes: list[tuple[str, str]] = []
        start = time.perf_counter()
        with self.console.progress(sum(len(c) for _, c in pending), self.progress_label) as advance:
            for self.batch_index, chunk in pending:
                batch = self.folder.read_batch(chunk)
                notes.extend(batch.notes)
                batch_rows = [skip_row(skip.relative, skip.reason) for skip in batch.skipped]
                for skip in batch.skipped:
                    self.console.warn(f"skipped {skip.relative}: {skip.reason}")
                if batch.entries:
                    batch_rows += self.process_batch(batch)
                    processed += len(batch.entries)
                batch_rows = [row for row in batch_rows if row["path"] not in done]
                self.journal.append(batch_rows)
                rows += batch_rows
                advance(len(chunk))
        for line in summarize_notes(notes):
            self.console.note(line)
        return rows, processed, time.perf_counter() - start


def resume_or_start(
    run: FolderRun, settings: dict[str, Any], overwrite: bool, console: Console
) -> dict[str, dict[str, Any]]:
    """Rows already finished by an interrupted run with the same settings (resume), or {} after
    checking that nothing would be overwritten and starting a fresh journal.

    ``run`` needs ``journal``, ``out`` and ``output_files()`` (a :class:`FolderRun` has them).
    """
    if run.journal.exists() and not overwrite:
        header, rows = run.journal.recover()
        expected = json.loads(json.dumps(to_jsonable(settings)))
        changed = sorted(key for key in expected if header.get(key) != expected[key])
        if changed:
            raise OutputExistsError(
                f"--out {run.out} holds an unfinished run with other settings "
                f"({', '.join(changed)} differ). Rerun with the same options to finish it, "
                "or pass --overwrite to start over."
            )
        remove_temp_files(run.out)
        console.note(f"resuming an interrupted run in {run.out}: {len(rows)} files already done.")
        return {row["path"]: row for row in rows}
    if not overwrite:
        refuse_overwrite(run.output_files(), run.out)
    run.out.mkdir(parents=True, exist_ok=True)
    remove_temp_files(run.out)
    run.journal.start(settings)
    return {}
