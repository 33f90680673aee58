"""Running an attack's compiled batch function over chunks of examples, on one device or
sharded over the replicas of a ``tf.distribute`` strategy.

Every example draws its random numbers from its own key, ``hash(seed, stream, example index)``
(:mod:`robustkit.seeding`), so what an attack finds for an example depends neither on the
chunking, nor on the strategy, nor on which other examples are attacked with it: the evaluator
with seed s finds what ``attack(x)`` with seed s finds. The radius is a tensor argument of the
attack's one compiled function, so an eps sweep traces it once.

Under a multi-worker strategy every worker runs the whole evaluation: forward passes (the clean
pass, the re-checks) are repeated on each worker, and each group of chunks is attacked one chunk
per replica, its results gathered to every worker, so all of them hold the same bytes and take
the same next steps. Each :meth:`Executor.run` first checks that every worker is about to attack
the same examples (same images, labels, targets and keys), and fails loudly otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit import cluster, seeding
from robustkit.errors import InputError, RobustkitError
from robustkit.models import Classifier

ChunkProgress = Callable[[int, int], None]  # (examples done, examples in total)
MAIN_STREAM = 0  # key stream of the evaluation itself (and of attack(...) calls)


@dataclass
class AttackOutput:
    """What one attack returned for m examples (NumPy): x_adv [m, H, W, C], logits [m, K],
    per-example evaluations (gradient steps or queries) [m]."""

    x_adv: np.ndarray
    logits: np.ndarray
    evaluations: np.ndarray


def keys_for(seed: int, stream: int, example_ids: np.ndarray) -> np.ndarray:
    """int32 [m, 2] per-example keys of examples ``example_ids`` in key stream ``stream``."""
    words = tf.constant([int(seed), int(stream)], tf.int32)
    return seeding.example_keys(words, tf.constant(example_ids, tf.int64)).numpy()


class Executor:
    """Runs attacks for one classifier in compiled batches of ``batch_size`` examples.

    Args:
        classifier: the model under attack.
        strategy: a ``tf.distribute`` strategy whose replicas each take one chunk at a time, or
            None for the default device.
        batch_size: examples per compiled batch (per replica under a strategy).
    """

    def __init__(self, classifier: Classifier, strategy: Any = None, batch_size: int = 256):
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}.")
        self.classifier = classifier
        self.strategy = strategy
        self.batch_size = int(batch_size)
        self.replicas = 1 if strategy is None else int(strategy.num_replicas_in_sync)
        self.multi_worker = cluster.is_multi_worker(strategy)

    def run(
        self,
        attack: Any,
        x: np.ndarray,
        labels: np.ndarray,
        keys: np.ndarray,
        eps: float,
        *,
        targets: np.ndarray | None = None,
        progress: ChunkProgress | None = None,
    ) -> AttackOutput:
        """Attack x [m, H, W, C] with true labels [m] at radius ``eps``; with ``targets`` [m]
        the attack is targeted at those classes. ``keys`` [m, 2] are the examples' keys."""
        target_mode = None if targets is None else "given"
        function = attack.compiled(self.classifier, target_mode)
        m = len(x)
        targets = np.zeros(m, np.int32) if targets is None else targets.astype(np.int32)
        if self.multi_worker:
            self._check_workers_agree(x, labels, targets, keys, eps)
        radius = np.float32(eps)
        chunks = [
            (
                x[begin : begin + self.batch_size],
                labels[begin : begin + self.batch_size].astype(np.int32),
                targets[begin : begin + self.batch_size],
                keys[begin : begin + self.batch_size],
                radius,
            )
            for begin in range(0, m, self.batch_size)
        ]
        outputs: list[tuple[np.ndarray, ...]] = []
        for first in range(0, len(chunks), self.replicas):
            group = chunks[first : first + self.replicas]
            outputs.extend(self._run_group(function, group))
            if progress is not None:
                progress(min((first + len(group)) * self.batch_size, m), m)
        if not outputs:
            classes = self.classifier.num_classes
            return AttackOutput(
                np.zeros((0, *self.classifier.input_shape), np.float32),
                np.zeros((0, classes), np.float32),
                np.zeros((0,), np.int64),
            )
        x_adv, logits, evaluations = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
        return AttackOutput(x_adv, logits, evaluations.astype(np.int64))

    def _check_workers_agree(self, *inputs: Any) -> None:
        """Raise unless every worker of the cluster is about to attack the same inputs."""
        seen = cluster.rows_by_task(self.strategy, [cluster.fingerprint(*map(np.asarray, inputs))])
        first, first_row = next(iter(seen.items()))
        differing = [str(task) for task, row in seen.items() if row != first_row]
        if differing:
            raise RobustkitError(
                f"The workers of the cluster would attack different examples: "
                f"{' and '.join(differing)} would attack other images, labels, targets or keys "
                f"than {first}. Every worker must be given the same model and data and compute "
                "the same forward passes (the same TensorFlow build on the same kind of "
                "hardware)."
            )

    def _run_group(self, function: Any, group: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Run up to ``replicas`` chunks at once; a short group is padded with copies of its
        first chunk, whose results are dropped."""

        def call(*chunk: Any) -> tuple[tf.Tensor, ...]:
            result = function(*chunk)[3]
            return result.x_adv, result.logits, result.steps

        if self.strategy is None:
            return [tuple(t.numpy() for t in call(*chunk)) for chunk in group]
        padded = group + [group[0]] * (self.replicas - len(group))

        def per_replica(position: int) -> Any:
            return self.strategy.experimental_distribute_values_from_function(
                lambda context: tf.constant(padded[context.replica_id_in_sync_group][position])
            )

        # each replica calls the compiled chunk function on its own device; gathering brings
        # every replica's results (the other workers' too) to this one
        results = self.strategy.run(call, args=tuple(per_replica(i) for i in range(5)))
        gathered = [self.strategy.gather(part, axis=0).numpy() for part in results]
        ends = np.cumsum([len(chunk[0]) for chunk in padded])[:-1]
        split = [np.split(part, ends) for part in gathered]
        return [tuple(part[r] for part in split) for r in range(len(group))]
