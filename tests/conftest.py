"""Shared test set-up: quiet TensorFlow logs, and a runner for scripts that need a fresh
TensorFlow process (logical devices must be configured before TensorFlow starts)."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from worker_processes import run_fresh

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(name="run_fresh")
def run_fresh_fixture() -> Callable[[Path], Any]:
    return run_fresh
