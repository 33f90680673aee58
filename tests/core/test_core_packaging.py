"""Packaging: a non-editable install ships every package of the source tree."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (CI's); 3.10 has no TOML reader

REPOSITORY = Path(__file__).resolve().parents[2]


def test_every_package_in_the_tree_is_listed_for_setuptools() -> None:
    settings = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(settings["packages"])
    for name, folder in settings["package-dir"].items():
        root = REPOSITORY / folder
        for init in root.rglob("__init__.py"):
            relative = init.parent.relative_to(root).parts
            assert ".".join((name, *relative)) in listed, f"{init.parent} is not packaged"
