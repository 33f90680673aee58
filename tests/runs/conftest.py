"""The folder-run tests reuse the command-line tests' tiny models and image trees
(tests/cli/cli_helpers.py), so that folder is importable here too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
