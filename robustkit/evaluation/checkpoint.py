"""Checkpoints of an evaluation: each (chunk, eps, attack) cell's results on disk, so that a rerun
continues where an interrupted one stopped and gives the same report (timings aside).

Layout under the checkpoint folder:

- ``identity.json``: everything the results depend on (model weights, examples, threat, suite,
  seed, mode, chunking); a rerun with anything else is refused, never mixed in;
- ``c00003-clean.npz``: chunk 3's clean logits and the digest of its images;
- ``c00003-e01-a02.npz``: chunk 3's cascade state at the second eps after the third attack.

Every file is written atomically (a kill leaves whole cells only); a cell replaces the one
before it in the same chunk and eps once it is on disk.

NumPy archives rather than ``tf.train.Checkpoint``: the state is NumPy arrays (bool, int64,
float32) of known shapes, not TensorFlow variables; ``.npz`` keeps their dtypes and bytes
exactly, loads without pickle, and needs no model or graph to be read back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from robustkit.errors import OutputExistsError
from robustkit.evaluation.cascade import PER_EXAMPLE, CascadeResult
from robustkit.evaluation.report import AttackOutcome
from robustkit.io import atomic_write, remove_temp_files, to_jsonable, write_json

IDENTITY = "identity.json"
_OUTCOME_FIELDS = [field.name for field in dataclasses.fields(AttackOutcome)]
_VERIFICATION = ("rechecked", "outside_ball", "disagreements")


def _state_arrays(state: CascadeResult) -> dict[str, np.ndarray]:
    arrays = {name: getattr(state, name) for name in (*PER_EXAMPLE, "attacked", "broken")}
    if state.x_adv is not None:
        arrays["x_adv"] = state.x_adv
    for name in _OUTCOME_FIELDS:
        arrays[f"outcome_{name}"] = np.array([getattr(o, name) for o in state.outcomes])
    arrays["verification"] = np.array([state.verification[key] for key in _VERIFICATION])
    return arrays


def _state_from(archive: Any) -> CascadeResult:
    count = len(archive["outcome_attack"])
    outcomes = [
        AttackOutcome(**{name: archive[f"outcome_{name}"][i].item() for name in _OUTCOME_FIELDS})
        for i in range(count)
    ]
    return CascadeResult(
        **{name: archive[name] for name in (*PER_EXAMPLE, "attacked", "broken")},
        x_adv=archive["x_adv"] if "x_adv" in archive else None,
        outcomes=outcomes,
        verification=dict(zip(_VERIFICATION, archive["verification"].tolist(), strict=True)),
    )


class EvaluationCheckpoint:
    """The checkpoint folder of one evaluation, whose settings are ``identity`` (JSON types).

    Opening a folder that holds another evaluation's checkpoint raises OutputExistsError;
    temporary files an interrupted write left are removed.
    """

    def __init__(self, directory: str | os.PathLike[str], identity: dict[str, Any]) -> None:
        self.directory = Path(directory)
        if self.directory.is_dir():
            remove_temp_files(self.directory)
        expected = json.loads(json.dumps(to_jsonable(identity)))
        path = self.directory / IDENTITY
        if path.is_file():
            found = json.loads(path.read_text(encoding="utf-8"))
            keys = expected.keys() | found.keys()
            changed = sorted(key for key in keys if found.get(key) != expected.get(key))
            if changed:
                raise OutputExistsError(
                    f"{self.directory} holds the checkpoint of an evaluation with other settings "
                    f"({', '.join(changed)} differ). Rerun with the same ones to finish it, or "
                    "delete it (CLI: --overwrite) to start over."
                )
        else:
            write_json(path, expected)

    def _path(self, chunk: int, name: str) -> Path:
        return self.directory / f"c{chunk:05d}-{name}.npz"

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        with atomic_write(path, "wb") as stream:
            np.savez(stream, **arrays)

    def clean(self, chunk: int) -> tuple[np.ndarray, str] | None:
        """(clean logits [m, K], images digest) of ``chunk``, or None before they were saved."""
        path = self._path(chunk, "clean")
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as archive:
            return archive["logits"], str(archive["images_sha256"])

    def save_clean(self, chunk: int, logits: np.ndarray, images_sha256: str) -> None:
        self._write(
            self._path(chunk, "clean"), {"logits": logits, "images_sha256": np.array(images_sha256)}
        )

    def _cells(self, chunk: int, e: int) -> dict[int, Path]:
        """{attack index: cell file} saved for ``chunk`` at the e-th eps."""
        pattern = re.compile(rf"c{chunk:05d}-e{e:02d}-a(\d+)\.npz")
        return {
            int(match.group(1)): path
            for path in self.directory.glob(f"c{chunk:05d}-e{e:02d}-a*.npz")
            if (match := pattern.fullmatch(path.name))
        }

    def latest(self, chunk: int, e: int) -> tuple[int, CascadeResult] | None:
        """(a, state after attack a) of the furthest saved cell of ``chunk`` at the e-th eps."""
        cells = self._cells(chunk, e)
        if not cells:
            return None
        a = max(cells)
        with np.load(cells[a], allow_pickle=False) as archive:
            return a, _state_from(archive)

    def save(self, chunk: int, e: int, a: int, state: CascadeResult) -> None:
        """Save ``chunk``'s state at the e-th eps after attack ``a``; drop the cells before it."""
        earlier = [path for index, path in self._cells(chunk, e).items() if index < a]
        self._write(self._path(chunk, f"e{e:02d}-a{a:02d}"), _state_arrays(state))
        for path in earlier:
            path.unlink(missing_ok=True)
