"""Output safety for runs: where outputs go, and the rules that keep inputs and earlier results.

Nothing a user gave us is overwritten or lost: an output folder never lies inside the input,
an output file never replaces an input image, and earlier results are replaced only when the
caller says ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from robustkit.errors import InputError, OutputExistsError
from robustkit.runs.lock import RunLock


def check_output_folder(out: str | os.PathLike[str], images: str | os.PathLike[str]) -> None:
    """Refuse an output folder that is the input folder, inside it, or an existing file."""
    out_resolved = Path(out).resolve()
    source = Path(images).resolve()
    if out_resolved.exists() and not out_resolved.is_dir():
        raise InputError(f"The output folder {out} is an existing file; give a folder.")
    if source.is_dir() and (out_resolved == source or out_resolved.is_relative_to(source)):
        raise InputError(
            f"The output folder {out} is inside the input folder {images}; choose a folder "
            "outside it (outputs would be mixed with inputs and read back as images next time)."
        )


@contextlib.contextmanager
def locked_output(out: str | os.PathLike[str], images: str | os.PathLike[str]) -> Iterator[RunLock]:
    """Check ``out`` against the input ``images``, then hold its lock for the block."""
    check_output_folder(out, images)
    with RunLock(out) as lock:
        yield lock


def plan_outputs(relatives: Sequence[str], suffixes: Sequence[str]) -> dict[str, list[str]]:
    """Output paths (relative to the output folder) for each input: its path without the
    extension plus each suffix, e.g. 'cat/a.jpg' -> ['cat/a.png', 'cat/a.perturbation.png'].

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
    """OutputExistsError when any of ``paths`` exists (the caller checks ``overwrite``)."""
    existing = [path for path in paths if path.exists()]
    if existing:
        raise OutputExistsError(
            f"{out} already holds {len(existing)} of this run's output files (e.g. "
            f"{existing[0]}); pass overwrite=True (CLI: --overwrite) to replace them, or choose "
            "another output folder."
        )


def refuse_writing_outside(outputs: Sequence[Path], out: Path) -> None:
    """Refuse outputs whose folder leads outside ``out`` (a symbolic link to a folder
    elsewhere inside it): nothing is written outside the output folder."""
    root = out.resolve()
    for output in outputs:
        if not output.parent.resolve().is_relative_to(root):
            raise InputError(
                f"The output {output} would be written outside {out}: {output.parent} is a "
                "symbolic link leading elsewhere. Remove the link or choose another output folder."
            )


def refuse_overwriting_inputs(outputs: Sequence[Path], inputs: Sequence[Path]) -> None:
    """Never write over an input file, even when overwriting is allowed."""
    resolved_inputs = {path.resolve() for path in inputs}
    for output in outputs:
        if output.resolve() in resolved_inputs:
            raise InputError(
                f"The output {output} would replace an input image; choose another output folder."
            )
