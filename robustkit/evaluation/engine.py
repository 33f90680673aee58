"""Running an attack's in-graph ``run`` over chunks of examples, on one device or sharded over
the replicas of a ``tf.distribute`` strategy.

The examples are cut into the same chunks either way, and each chunk's stateless seed depends
only on the run's key and the index of the chunk's first example, so a strategy changes where
the chunks run, never what they compute. With ``chunk_size=1`` every example gets its own
seed, whichever other examples are attacked with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.models import Classifier

ChunkProgress = Callable[[int, int], None]  # (examples done, examples in total)


@dataclass
class AttackOutput:
    """What one attack returned for m examples (NumPy): x_adv [m, H, W, C], logits [m, K],
    per-example evaluations (gradient steps or queries) [m]."""

    x_adv: np.ndarray
    logits: np.ndarray
    evaluations: np.ndarray


def chunk_seed(key: Sequence[int], first_index: int) -> np.ndarray:
    """The int32 [2] stateless seed of the chunk starting at example ``first_index``."""
    words = np.random.SeedSequence([*map(int, key), int(first_index)]).generate_state(2)
    return words.astype(np.uint32).view(np.int32)


class Executor:
    """Runs attacks for one classifier in compiled chunks of ``chunk_size`` examples.

    Args:
        classifier: the model under attack.
        strategy: a ``tf.distribute`` strategy whose replicas each take one chunk at a time, or
            None for the default device.
        chunk_size: examples per chunk (per replica under a strategy).
    """

    def __init__(self, classifier: Classifier, strategy: Any = None, chunk_size: int = 256):
        if int(chunk_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {chunk_size!r}.")
        self.classifier = classifier
        self.strategy = strategy
        self.chunk_size = int(chunk_size)
        self.replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
        self._functions: dict[tuple[int, bool], tuple[Any, Any]] = {}

    def _function(self, attack: Any, targeted: bool) -> Any:
        """The compiled chunk function for this attack (cached; the attack is kept alive)."""
        key = (id(attack), targeted)
        if key not in self._functions:
            classifier = self.classifier

            def attack_chunk(x, labels, seed):
                result = attack.run(classifier, x, labels, seed, targeted=targeted)
                return result.x_adv, result.logits, result.steps

            signature = [
                tf.TensorSpec((None, *classifier.input_shape), tf.float32),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((2,), tf.int32),
            ]
            self._functions[key] = (attack, tf.function(attack_chunk, input_signature=signature))
        return self._functions[key][1]

    def run(
        self,
        attack: Any,
        x: np.ndarray,
        labels: np.ndarray,
        example_ids: np.ndarray,
        key: Sequence[int],
        *,
        targeted: bool = False,
        progress: ChunkProgress | None = None,
    ) -> AttackOutput:
        """Attack x [m, H, W, C] with labels (or targets) [m].

        ``example_ids`` [m] are the examples' indices in the whole data set (they pick the
        chunk seeds); ``key`` identifies the run (seed, eps, attack, pass).
        """
        function = self._function(attack, targeted)
        m = len(x)
        starts = list(range(0, m, self.chunk_size))
        chunks = [
            (
                x[begin : begin + self.chunk_size],
                labels[begin : begin + self.chunk_size].astype(np.int32),
                chunk_seed(key, int(example_ids[begin])),
            )
            for begin in starts
        ]
        outputs: list[tuple[np.ndarray, ...]] = []
        for first in range(0, len(chunks), self.replicas):
            group = chunks[first : first + self.replicas]
            outputs.extend(self._run_group(function, group))
            if progress is not None:
                progress(min((first + len(group)) * self.chunk_size, m), m)
        if not outputs:
            classes = self.classifier.num_classes
            return AttackOutput(
                np.zeros((0, *self.classifier.input_shape), np.float32),
                np.zeros((0, classes), np.float32),
                np.zeros((0,), np.int64),
            )
        x_adv, logits, evaluations = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
        return AttackOutput(x_adv, logits, evaluations.astype(np.int64))

    def _run_group(self, function: Any, group: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Run up to ``replicas`` chunks at once; a short group is padded with copies of its
        first chunk, whose results are dropped."""
        if self.strategy is None:
            return [tuple(t.numpy() for t in function(*chunk)) for chunk in group]
        padded = group + [group[0]] * (self.replicas - len(group))

        def per_replica(position: int) -> Any:
            return self.strategy.experimental_distribute_values_from_function(
                lambda context: tf.constant(padded[context.replica_id_in_sync_group][position])
            )

        # each replica calls the compiled chunk function on its own device
        results = self.strategy.run(
            lambda *chunk: function(*chunk), args=tuple(per_replica(i) for i in range(3))
        )
        local = [self.strategy.experimental_local_results(part) for part in results]
        return [tuple(part[r].numpy() for part in local) for r in range(len(group))]
