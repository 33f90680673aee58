"""Real models shared by the model tests: each is built (BatchNorm and head calibrated) once per
session, on first use. Tests that change weights (training) build their own copy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from zoo_helpers import ZOO

from robustkit.models import Classifier


@pytest.fixture(scope="session")
def zoo() -> Callable[[str], Classifier]:
    """``zoo(name)``: the Classifier of :data:`zoo_helpers.ZOO`'s model ``name``, built on first
    use; its weights must not be changed."""
    built: dict[str, Classifier] = {}

    def get(name: str) -> Classifier:
        if name not in built:
            built[name] = ZOO[name].classifier()
        return built[name]

    return get
