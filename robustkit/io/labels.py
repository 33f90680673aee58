"""Label sources for an image folder: a labels CSV, class names, class subfolders."""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from robustkit.errors import InputError

_HEADER_NAMES = {"path", "file", "filename", "image", "relative_path"}


def normalize_relative(path: str) -> str:
    """A path as robustkit keys it: POSIX separators, ``.`` and ``a/..`` folded away lexically
    (a path leading out stays ``../...``; an absolute path stays absolute)."""
    return posixpath.normpath(path.strip().replace("\\", "/"))


def inside_root(key: str, root: Path) -> str | None:
    """A labels-file path ``key`` (normalized) as a path relative to the image folder ``root``,
    or None when it names a place outside it (``../x.png``, an absolute path elsewhere).

    Absolute paths are compared with the root as given and as resolved. Nothing is opened:
    label keys only pick among the files found under the root.
    """
    if PurePosixPath(key).is_absolute() or PureWindowsPath(key).is_absolute():
        for base in (Path(os.path.abspath(root)), root.resolve()):
            if PurePosixPath(key).is_relative_to(base.as_posix()):
                return PurePosixPath(key).relative_to(base.as_posix()).as_posix()
        return None
    return None if key == ".." or key.startswith("../") else key


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names in model order, one per line (blank lines ignored); line i names class i."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"Cannot read class names from {path}: {error}.") from error
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise InputError(f"{path} holds no class names; write one name per line, in model order.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"{path} names a class twice: {', '.join(duplicates)}.")
    return names


def class_index(value: str, class_names: Sequence[str] | None, source: str) -> int:
    """The class index a label string means: an integer, or a name looked up in class_names."""
    value = value.strip()
    if class_names is not None and value in class_names:
        return list(class_names).index(value)
    try:
        return int(value)
    except ValueError:
        if class_names is None:
            raise InputError(
                f"{source}: label {value!r} is a class name, but no class names were given. "
                "Pass the class names in model order (CLI: --class-names names.txt)."
            ) from None
        raise InputError(
            f"{source}: label {value!r} is neither a class index nor one of the class names "
            f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''})."
        ) from None


def read_labels_csv(
    path: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> dict[str, int]:
    """Labels from a CSV of ``relative path, label`` rows (optional header ``path,label``).

    Paths are relative to the image folder; a label is a class index or a class name.
    Returns {normalized relative path: class index}.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as stream:
            rows = [row for row in csv.reader(stream) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"Cannot read labels from {path}: {error}.") from error
    if rows and rows[0][0].strip().lower() in _HEADER_NAMES:
        rows = rows[1:]
    labels: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise InputError(f"{path}, row {number}: expected 'relative path,label', got {row}.")
        key = normalize_relative(row[0])
        label = class_index(row[1], class_names, f"{path}, row {number}")
        if labels.get(key, label) != label:
            raise InputError(f"{path}: {key} has two different labels.")
        labels[key] = label
    if not labels:
        raise InputError(f"{path} holds no labels; write 'relative path,label' rows.")
    return labels


def folder_class_names(root: Path) -> list[str]:
    """Names of the (non-hidden) subfolders of root, sorted: Keras' class order."""
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and not entry.name.startswith(".")
    )
