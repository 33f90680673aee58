"""Real models shared by the model tests: each is built (BatchNorm and head calibrated) once per
session, on first use, and released after this folder's last test. Tests that change weights
(training) build their own copy.

The costliest pairs (every saliency method on MobileNetV2, ResNet50, EfficientNetB0 and
ConvNeXtTiny, the API attack and evaluation of the big ones, their training) run only with
``ROBUSTKIT_FULL_ZOO=1``: each traces graphs of 150-250 layers (10-90 s a test on two cores).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest
from zoo_helpers import ZOO

from robustkit.models import Classifier

_BUILT: dict[str, Classifier] = {}


@pytest.fixture(scope="session")
def zoo() -> Callable[[str], Classifier]:
    """``zoo(name)``: the Classifier of :data:`zoo_helpers.ZOO`'s model ``name``, built on first
    use; its weights must not be changed."""

    def get(name: str) -> Classifier:
        if name not in _BUILT:
            _BUILT[name] = ZOO[name].classifier()
        return _BUILT[name]

    return get


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After this folder's last test, drop the shared models and their compiled graphs (about
    1.5 GB) so that the rest of the suite does not carry them."""
    here = Path(__file__).parent
    if nextitem is None or here not in Path(nextitem.path).parents:
        _BUILT.clear()
        gc.collect()
