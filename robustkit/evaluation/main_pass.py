"""The main pass of an evaluation, chunk by chunk: clean logits, then the suite's cascade at every
eps, for one chunk of examples at a time.

Only one chunk's images are in memory at once, so an image folder of any size is evaluated in
bounded memory. Every example keeps its own random key (its index in the whole data), so the
examples' results do not depend on the chunking; per-eps results are merged over the chunks
and carried over from smaller radii as in one pass. With a checkpoint every finished
(chunk, eps, attack) cell is saved, and a rerun starts from the furthest saved cell.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustkit.errors import InputError
from robustkit.evaluation.cascade import (
    CascadeResult,
    carry_over,
    merge_results,
    run_attack,
    start_cascade,
)
from robustkit.evaluation.checkpoint import EvaluationCheckpoint
from robustkit.evaluation.engine import MAIN_STREAM, Executor, keys_for
from robustkit.evaluation.sources import ExampleSource, digest
from robustkit.norms import make_norm

# (attack name, eps, pass number, passes, examples done, examples in the pass)
AttackProgress = Callable[[str, float, int, int, int, int], None]


@dataclass
class MainPass:
    """The main pass's results: clean logits [N, K], one merged and carried-over result per
    eps, and the seconds spent on clean forward passes."""

    clean_logits: np.ndarray
    results: list[CascadeResult]
    clean_seconds: float


class _Chunk:
    """Examples ``indices`` of the source, their images read once, when first needed, and
    checked against the digest an interrupted run saved for them."""

    def __init__(self, source: ExampleSource, indices: np.ndarray, saved_digest: str | None):
        self.source = source
        self.indices = indices
        self.saved_digest = saved_digest
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = self.source.images(self.indices)
            if self.saved_digest is not None and digest(self._images) != self.saved_digest:
                first, last = int(self.indices[0]), int(self.indices[-1])
                raise InputError(
                    f"The images of examples {first}..{last} differ from those the interrupted "
                    "evaluation read; restore them, or start over without its checkpoint."
                )
        return self._images


def run_main_pass(
    executor: Executor,
    attacks: Sequence[tuple[Any, Any]],
    norm_name: str,
    epsilons: Sequence[float],
    source: ExampleSource,
    *,
    seed: int,
    cascade: bool,
    keep_images: bool,
    chunk_size: int,
    checkpoint: EvaluationCheckpoint | None = None,
    progress: AttackProgress | None = None,
) -> MainPass:
    """Clean logits and the cascade of built ``attacks`` (spec, attack) at every eps
    (ascending) for ``source``'s examples, ``chunk_size`` examples at a time."""
    n, classifier = len(source), executor.classifier
    labels = source.labels
    parts: list[list[CascadeResult]] = [[] for _ in epsilons]
    logits_parts = []
    clean_seconds = 0.0
    for c, begin in enumerate(range(0, n, chunk_size)):
        indices = np.arange(begin, min(begin + chunk_size, n))
        y = labels[indices]
        saved = checkpoint.clean(c) if checkpoint is not None else None
        chunk = _Chunk(source, indices, None if saved is None else saved[1])
        if saved is None:
            started = time.perf_counter()
            logits = classifier.predict_logits(chunk.images, executor.batch_size)
            clean_seconds += time.perf_counter() - started
            if checkpoint is not None:
                checkpoint.save_clean(c, logits, digest(chunk.images))
        else:
            logits = saved[0]
        logits_parts.append(logits)
        keys = keys_for(seed, MAIN_STREAM, indices)
        for e, eps in enumerate(epsilons):
            norm = make_norm(norm_name, eps)
            cell = checkpoint.latest(c, e) if checkpoint is not None else None
            if cell is None:
                first = 0
                kept = chunk.images if keep_images else None
                state = start_cascade(logits, y, len(attacks), kept)
            else:
                first, state = cell[0] + 1, cell[1]

            def report(name: str, p: int, passes: int, done: int, total: int, eps=eps) -> None:
                if progress is not None:
                    progress(name, eps, p, passes, done, total)

            for a in range(first, len(attacks)):
                run_attack(
                    executor,
                    state,
                    a,
                    attacks[a],
                    norm,
                    chunk.images,
                    y,
                    logits,
                    keys,
                    cascade=cascade,
                    progress=report,
                )
                if checkpoint is not None:
                    checkpoint.save(c, e, a, state)
            parts[e].append(state)
    clean_logits = np.concatenate(logits_parts)
    correct = clean_logits.argmax(axis=1) == labels
    results = [merge_results(eps_parts, correct, cascade) for eps_parts in parts]
    for smaller, larger in itertools.pairwise(results):
        carry_over(smaller, larger)
    return MainPass(clean_logits, results, clean_seconds)
