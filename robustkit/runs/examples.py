"""The labelled images of a folder as an evaluation's examples, read chunk by chunk.

Every file is decoded once up front, one batch at a time, so that unreadable files are skipped
(with a logged warning) before the evaluation numbers its examples; the evaluator then reads the
images it needs, one chunk at a time (:class:`~robustkit.evaluation.ExampleSource`), and never
holds the whole folder in memory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from robustkit.errors import ImageReadError, InputError
from robustkit.evaluation.sources import digest
from robustkit.io import ImageEntry, ImageFolder
from robustkit.runs.folder import summarize_notes

logger = logging.getLogger(__name__)


class FolderExamples:
    """The readable, labelled images of ``folder`` (the first ``limit`` of them) as float32
    pixels in ``bounds``; ``batch_size`` images are decoded at a time."""

    def __init__(
        self,
        folder: ImageFolder,
        bounds: tuple[float, float],
        batch_size: int,
        limit: int | None = None,
    ) -> None:
        if folder.label_source == "none":
            raise InputError(
                f"No labels for the images under {folder.root}: robust accuracy needs true "
                "labels. Give a labels CSV (CLI: --labels labels.csv) or put the images in class "
                "subfolders."
            )
        self.folder = folder
        self.bounds = bounds
        for skip in folder.skipped:
            logger.warning("skipped %s: %s", skip.relative, skip.reason)
        self.entries: list[ImageEntry] = []
        notes: list[tuple[str, str]] = []
        for batch in folder.batches(batch_size):
            for skip in batch.skipped:
                logger.warning("skipped %s: %s", skip.relative, skip.reason)
            self.entries += batch.entries
            notes += batch.notes
            if limit is not None and len(self.entries) >= limit:
                break
        for line in summarize_notes(notes):
            logger.info(line)
        self.entries = self.entries[:limit]
        if not self.entries:
            raise InputError(f"None of the images under {folder.root} could be read.")
        self.labels = np.array([entry.label for entry in self.entries], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    def images(self, indices: np.ndarray) -> np.ndarray:
        """float32 [m, H, W, C] pixels of examples ``indices`` [m], decoded again from disk."""
        batch = self.folder.read_batch([self.entries[int(i)] for i in indices])
        if batch.skipped:
            skip = batch.skipped[0]
            raise ImageReadError(
                f"{self.folder.root / skip.relative} was read earlier in this evaluation but not "
                f"now ({skip.reason}); do not change the images while they are evaluated."
            )
        return batch.pixels(self.bounds)

    def identity(self) -> dict[str, Any]:
        """The folder, the files and labels read, and how they were decoded."""
        names = "\n".join(entry.relative for entry in self.entries).encode()
        return {
            "folder": str(self.folder.root.resolve()),
            "files_sha256": digest(np.frombuffer(names, np.uint8)),
            "labels_sha256": digest(self.labels),
            "resize": self.folder.resize,
        }
