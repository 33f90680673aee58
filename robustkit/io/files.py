"""Atomic file writes: a temporary file beside the target, then ``os.replace``.

An interrupted process leaves either the old file or the complete new one, never half a file.
Temporary files are hidden (leading dot) and end in :data:`TEMP_SUFFIX`, so folder scans skip
them and :func:`remove_temp_files` can clean up after a killed run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".robustkit-tmp"


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give ``path`` to OSErrors of the block that name no file (a failed write or flush on a
    full disk), so the error says where writing failed."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror, os.fspath(path)) from error


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path`` in one step.

    Parent folders are created. ``mode`` is "wb" or "w" (text, UTF-8, no newline translation).
    On any exception the temporary file is removed and ``path`` is left untouched; an OSError
    (read-only folder, full disk) names ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}.")
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
    try:
        text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with naming_errors(path), os.fdopen(descriptor, mode, **text) as stream:
            yield stream
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise


def remove_temp_files(directory: str | os.PathLike[str]) -> int:
    """Delete temporary files a killed run left under ``directory``; returns how many."""
    removed = 0
    for temp in Path(directory).rglob(f".*{TEMP_SUFFIX}"):
        temp.unlink()
        removed += 1
    return removed
