"""What every ``robustkit`` command shares: option groups, the console (printing, progress bars,
the library's notes and warnings) and the command template that maps errors to exit codes.

Exit codes (the same for every command):

- 0: done (files that could not be read are skipped, listed on stderr and in the report);
- 1: failure during the run (including an interruption; rerun the same command to finish);
- 2: usage or input error (bad option, missing or unsafe model, unreadable input, output that
  would overwrite results). Errors print one line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import click

from robustkit.errors import RobustkitError
from robustkit.io import RESIZE_METHODS, to_jsonable
from robustkit.runs import (
    DEFAULT_BATCH_SIZE,
    FolderReport,
    ImageOptions,
    ModelOptions,
    OutputOptions,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2
LIBRARY_LOGGER = "robustkit.runs"  # its notes and warnings are shown on the console

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


class SizeType(click.ParamType):
    """HEIGHTxWIDTH in pixels, e.g. 224x224."""

    name = "HxW"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().split("x")
        if len(parts) != 2 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
            self.fail(f"{value!r} is not HEIGHTxWIDTH in pixels (e.g. 224x224)", param, ctx)
        return int(parts[0]), int(parts[1])


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
SIZE = SizeType()

# ----------------------------------------------------------------------------- the console


class ConsoleLog(logging.Handler):
    """Library log records as console lines: warnings always, notes unless quiet."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            self.console.warn(message)
        else:
            self.console.note(message)


@dataclass
class Console:
    """Where a command's words go: summary on stdout, warnings/notes/progress on stderr.

    ``debug`` shows tracebacks instead of one-line errors.
    """

    quiet: bool = False
    json_output: bool = False
    debug: bool = False

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

    def say_run(self, report: FolderReport, verb: str, label: str) -> None:
        """The summary's speed line: images/s and what this run did of a resumed job."""
        this_run = report.this_run
        line = f"{label}{report.summary['images_per_second']:.1f} images/s"
        if this_run.resumed:
            line += (
                f" (this run {verb} {this_run.images_processed} images; "
                f"{this_run.images_done_before} were done by an earlier run)"
            )
        self.say(line)

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

    @contextlib.contextmanager
    def library_log(self) -> Iterator[None]:
        """Show the folder runs' log (notes and warnings) on the console for the block."""
        logger = logging.getLogger(LIBRARY_LOGGER)
        handler = ConsoleLog(self)
        saved = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.level, logger.propagate = saved


class FolderProgressBar:
    """A folder run's ``progress(done, total)`` callback drawn as one bar; use it as a context
    manager so the bar is closed."""

    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.label = label
        self.stack = contextlib.ExitStack()
        self.advance: Callable[[int], None] | None = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.advance is None:
            self.advance = self.stack.enter_context(self.console.progress(total, self.label))
        self.advance(done - self.done)
        self.done = done

    def __enter__(self) -> FolderProgressBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stack.close()


# ----------------------------------------------------------------------------- option groups


def _stack(*decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """Apply option decorators in the order listed (top to bottom in --help)."""

    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def option_group(
    group: type, parameter: str, *options: Callable[[Callable], Callable]
) -> Callable[[Callable], Callable]:
    """Click options whose values reach the command as one ``group`` dataclass, named
    ``parameter``; each option's destination is one of the dataclass's fields."""
    fields = [field.name for field in dataclasses.fields(group)]

    def decorator(command: Callable) -> Callable:
        @functools.wraps(command)
        def grouped(*args: Any, **kwargs: Any) -> Any:
            kwargs[parameter] = group(**{name: kwargs.pop(name) for name in fields})
            return command(*args, **kwargs)

        return _stack(*options)(grouped)

    return decorator


model_options = option_group(
    ModelOptions,
    "model_options",
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
    click.option(
        "--input-size",
        type=SIZE,
        help="HEIGHTxWIDTH to run a model whose input size is undefined (None, None, C) at, "
        "e.g. 224x224; add --resize for images of other sizes.",
    ),
)

image_options = option_group(
    ImageOptions,
    "image_options",
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
        default=DEFAULT_BATCH_SIZE,
        show_default=True,
        help="Images per batch; memory grows with it (a 224x224 ResNet50 attack at 32 peaks "
        "near 2.4 GiB).",
    ),
)

console_options = option_group(
    Console,
    "console",
    click.option("--quiet", is_flag=True, help="No progress bar, notes or summary."),
    click.option("--json", "json_output", is_flag=True, help="Print the report as JSON on stdout."),
    click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors."),
)


def output_options(default_out: str) -> Callable[[Callable], Callable]:
    """--out (default ``default_out`` in the current directory) and --overwrite as ``output``
    (OutputOptions), then --quiet, --json and --debug as ``console`` (Console)."""
    return _stack(
        option_group(
            OutputOptions,
            "output",
            click.option(
                "--out",
                type=click.Path(file_okay=False, path_type=Path),
                default=default_out,
                show_default=True,
                help="Output folder.",
            ),
            click.option("--overwrite", is_flag=True, help="Replace results already in --out."),
        ),
        console_options,
    )


# ----------------------------------------------------------------------------- the template


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {message}", err=True)


def _fail(code: int, message: str, debug: bool) -> NoReturn:
    """Report the exception being handled (one line, or the traceback with --debug) and exit."""
    click.echo(traceback.format_exc().rstrip() if debug else message, err=True)
    raise click.exceptions.Exit(code) from None


def command_template(command: Callable[..., int | None]) -> Callable[..., None]:
    """The template of every command callback (which takes ``console``): the library's notes
    and warnings shown on the console, Python warnings as one ``warning:`` line, errors mapped
    to exit codes.

    RobustkitError -> 2, anything else (and Ctrl-C) -> 1, each as one line on stderr; with
    ``--debug`` the traceback is printed instead (same exit code).
    """

    @functools.wraps(command)
    def wrapper(*args: Any, console: Console, **kwargs: Any) -> None:
        try:
            with warnings.catch_warnings(), console.library_log():
                warnings.showwarning = _show_warning
                code = command(*args, console=console, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except RobustkitError as error:
            _fail(EXIT_INPUT, f"error: {error}", console.debug)
        except KeyboardInterrupt:
            _fail(
                EXIT_FAILURE,
                "error: interrupted; rerun the same command to finish the rest.",
                console.debug,
            )
        except Exception as error:
            hint = f"error: {type(error).__name__}: {error} (rerun with --debug for the traceback)"
            _fail(EXIT_FAILURE, hint, console.debug)
        raise click.exceptions.Exit(code or EXIT_OK)

    return wrapper
