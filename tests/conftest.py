"""Shared test set-up: quiet TensorFlow logs, and a runner for scripts that need a fresh
TensorFlow process (logical devices must be configured before TensorFlow starts)."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPOSITORY = Path(__file__).resolve().parents[1]


def _run_fresh(script: Path) -> Any:
    """Run ``script`` in a new Python process from the repository root; the JSON it prints on
    its last stdout line."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPOSITORY,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def run_fresh() -> Callable[[Path], Any]:
    return _run_fresh
