"""Reports on disk: JSON and CSV written atomically, and a journal for resuming runs."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robustkit.errors import InputError
from robustkit.io.files import atomic_write, naming_errors


def to_jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays, paths and tuples turned into JSON types.

    Non-finite floats become None, so the output is strict JSON.
    """
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path, "w") as stream:
        json.dump(to_jsonable(data), stream, indent=2, allow_nan=False)
        stream.write("\n")


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], fields: Sequence[str]
) -> None:
    """Write ``rows`` as CSV with a header of ``fields``, atomically.

    Missing values are left empty; floats keep full precision; booleans are true/false.
    """

    def cell(value: Any) -> Any:
        value = to_jsonable(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else value

    with atomic_write(path, "w") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({field: cell(row.get(field)) for field in fields})


class RunJournal:
    """Append-only JSON-lines record of finished work, so an interrupted run can resume.

    The first line is a header (the run's settings); each further line is one finished row.
    Rows are appended only after their outputs are complete on disk, so every row in the
    journal is trustworthy; a line cut short by an interruption is ignored.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(header, rows) of an existing journal."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"Cannot read the run journal {self.path}: {error}.") from error
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the write of this line was interrupted; nothing after it is valid
        if not records or not isinstance(records[0], dict) or "header" not in records[0]:
            raise InputError(
                f"{self.path} is not a robustkit run journal; remove it or choose another output."
            )
        return records[0]["header"], records[1:]

    def recover(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(header, rows) of an existing journal, rewritten in one atomic step without any
        cut-off last line, so that further rows append cleanly."""
        header, rows = self.read()
        self.start(header, rows)
        return header, rows

    def start(self, header: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] = ()) -> None:
        """Begin a new journal holding ``header`` and ``rows`` (replacing any old one)."""
        with atomic_write(self.path, "w") as stream:
            stream.write(json.dumps(to_jsonable({"header": header}), allow_nan=False) + "\n")
            stream.write(_lines(rows))

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add finished rows, flushed to the operating system before returning."""
        with naming_errors(self.path), self.path.open("a", encoding="utf-8") as stream:
            stream.write(_lines(rows))
            stream.flush()
            os.fsync(stream.fileno())

    def remove(self) -> None:
        """Delete the journal (the run is complete)."""
        self.path.unlink(missing_ok=True)


def _lines(rows: Sequence[Mapping[str, Any]]) -> str:
    """JSON lines of ``rows``, each ending in a newline."""
    return "".join(json.dumps(to_jsonable(row), allow_nan=False) + "\n" for row in rows)
