"""What the sanity checks work with, in four pieces with one job each.

* :class:`CheckData`: the evaluated examples and the model that reads them.
* :class:`SuiteRun`: the main evaluation, as run (suite, threat, mode, seed) and as found
  (per-example records, verification counts). Read only.
* :class:`CheckAttacker`: runs the checks' own attacks, each check in its own key stream.
* :class:`CheckFindings`: verified adversarials the checks found; they lower the headline.

:class:`CheckContext` bundles them so every check has the same signature.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.evaluation.cascade import BY_CHECK, CascadeResult, run_cascade, within_ball
from robustkit.evaluation.engine import Executor, keys_for
from robustkit.evaluation.report import ExampleRecords
from robustkit.evaluation.sources import STREAM_CHUNK_BATCHES
from robustkit.evaluation.suites import SuiteAttack
from robustkit.gradients import input_gradients
from robustkit.models import Classifier
from robustkit.norms import Norm, make_norm
from robustkit.tracing import compile_with_signature

CheckProgress = Callable[[str, float | None, int, int], None]  # (check, eps, done, total)


@dataclass(frozen=True)
class CheckData:
    """The evaluated examples: images x [N, H, W, C] in the classifier's bounds, true labels
    y [N], clean logits [N, K]; ``subsample`` [S] sorted indices into x of the examples the
    extra-compute checks use; ``batch_size`` examples per compiled forward or backward pass."""

    classifier: Classifier
    x: np.ndarray
    y: np.ndarray
    clean_logits: np.ndarray
    subsample: np.ndarray
    batch_size: int

    @functools.cached_property
    def correct(self) -> np.ndarray:
        """bool [N]: classified correctly."""
        return self.clean_logits.argmax(axis=1) == self.y

    def indices(self, mask: np.ndarray) -> np.ndarray:
        """Subsample indices where ``mask`` [N] holds."""
        return self.subsample[mask[self.subsample]]

    def fresh_predictions(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes [m] of x [m, H, W, C] from a new forward pass."""
        if len(x) == 0:
            return np.zeros((0,), np.int64)
        low, high = self.classifier.bounds
        return self.classifier.predict_logits(np.clip(x, low, high), self.batch_size).argmax(1)


@dataclass(frozen=True)
class SuiteRun:
    """The main evaluation the checks judge.

    ``specs[a]`` is the a-th suite attack as specified and ``attacks[a]`` as built (every eps
    a run argument); ``epsilons`` [E] ascending radii of the ``norm_name`` ball; ``cascade``:
    the mode; ``records`` and ``verification`` what the suite found.
    """

    specs: list[SuiteAttack]
    attacks: list[Any]
    norm_name: str
    epsilons: list[float]
    cascade: bool
    seed: int
    records: ExampleRecords
    verification: dict[str, int]

    @property
    def gradient_attacks(self) -> list[int]:
        """Indices of the suite's gradient attacks."""
        return [a for a, spec in enumerate(self.specs) if not spec.gradient_free]

    @property
    def gradient_free_attacks(self) -> list[int]:
        """Indices of the suite's gradient-free attacks."""
        return [a for a, spec in enumerate(self.specs) if spec.gradient_free]

    @property
    def untargeted_attacks(self) -> list[int]:
        """Indices of the suite's attacks without top-k target passes."""
        return [a for a, spec in enumerate(self.specs) if not spec.top_k_targets]


@dataclass(frozen=True)
class SingleStep:
    """One raw FGSM step at an eps on every example: the fresh logits [N, K] of the stepped
    images and bool [N] whether each lies inside the bounds and the eps-ball."""

    logits: np.ndarray
    inside: np.ndarray


class CheckAttacker:
    """Runs the checks' own attacks on ``data`` in the ``norm_name`` ball: each check draws
    from its own key stream of ``seed``, and reports ``progress`` under its name."""

    def __init__(
        self,
        executor: Executor,
        data: CheckData,
        norm_name: str,
        seed: int,
        progress: CheckProgress | None = None,
    ) -> None:
        self.executor = executor
        self.data = data
        self.norm_name = norm_name
        self.seed = seed
        self.progress = progress
        self._fgsm: dict[float, SingleStep] = {}
        self._fgsm_step = _fgsm_step(data.classifier, make_norm(norm_name, 0.0))

    def _report(self, name: str, eps: float) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(name, eps, done, total)

        return report

    def keys(self, stream: int, idx: np.ndarray) -> np.ndarray:
        """Keys [m, 2] of examples ``idx`` [m] in a check's random stream ``stream``."""
        return keys_for(self.seed, stream, idx)

    def returned_and_inside(
        self, attack: Any, idx: np.ndarray, stream: int, name: str, eps: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run built ``attack`` untargeted with the true labels on examples ``idx`` [m] at eps;
        (bool [m] a fresh forward pass classifies the result as the true label, bool [m] it
        lies inside the bounds and the eps-ball). Runs STREAM_CHUNK_BATCHES batches at a time,
        so only that many images are held, whatever m is."""
        data = self.data
        piece = STREAM_CHUNK_BATCHES * data.batch_size * self.executor.replicas
        report = self._report(name, eps)
        returned, inside = [], []
        for begin in range(0, len(idx), piece):
            part = idx[begin : begin + piece]
            out = self.executor.run(
                attack,
                data.x[part],
                data.y[part],
                self.keys(stream, part),
                eps,
                progress=lambda done, total, begin=begin: report(begin + done, len(idx)),
            )
            returned.append(data.fresh_predictions(out.x_adv) == data.y[part])
            inside.append(self.within_ball(out.x_adv, part, eps))
        if not returned:
            return np.zeros(0, bool), np.zeros(0, bool)
        return np.concatenate(returned), np.concatenate(inside)

    def cascade(
        self,
        attacks: Sequence[tuple[SuiteAttack, Any]],
        norm: Norm,
        idx: np.ndarray,
        stream: int,
        name: str,
    ) -> CascadeResult:
        """The cascade of built ``attacks`` (spec, attack) in ball ``norm`` on examples idx."""
        data = self.data
        report = self._report(name, norm.eps)
        return run_cascade(
            self.executor,
            attacks,
            norm,
            data.x[idx],
            data.y[idx],
            data.clean_logits[idx],
            self.keys(stream, idx),
            progress=lambda attack, p, passes, done, total: report(done, total),
        )

    def fgsm(self, eps: float) -> SingleStep:
        """Raw FGSM at ``eps``: one cross-entropy step of size eps with the true labels from
        every clean image, misclassified ones included, with no best-iterate choice (cached:
        checks 4 and 9 share it; one gradient evaluation per example, so no subsample is
        needed). Logits are a fresh forward pass of the stepped images; they are stepped one
        batch at a time and not kept."""
        if eps not in self._fgsm:
            data, size = self.data, self.data.batch_size
            y = data.y.astype(np.int32)
            radius = tf.constant(eps, tf.float32)
            logits, inside = [], []
            for begin in range(0, len(y), size):
                x = data.x[begin : begin + size]
                x_adv = self._fgsm_step(x, y[begin : begin + size], radius).numpy()
                logits.append(data.classifier.predict_logits(x_adv, size))
                inside.append(within_ball(self.norm_name, eps, x_adv, x, data.classifier.bounds))
            self._fgsm[eps] = SingleStep(np.concatenate(logits), np.concatenate(inside))
            self._report("single_step", eps)(len(y), len(y))
        return self._fgsm[eps]

    def within_ball(self, x_adv: np.ndarray, idx: np.ndarray, eps: float) -> np.ndarray:
        """bool [m]: x_adv [m, ...] lies inside the bounds and the eps-ball around x[idx]."""
        bounds = self.data.classifier.bounds
        return within_ball(self.norm_name, eps, x_adv, self.data.x[idx], bounds)


def _fgsm_step(classifier: Classifier, norm: Norm) -> Callable[..., tf.Tensor]:
    """Compiled (x [m, H, W, C], labels [m], eps) -> x + eps * steepest-ascent direction of
    the cross-entropy, projected onto the ball and clipped to the bounds. Traced once: the
    radius is a tensor argument."""
    signature = [
        tf.TensorSpec((None, *classifier.input_shape), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((), tf.float32),
    ]

    def step(x: tf.Tensor, y: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        gradient = input_gradients(classifier, x, y, loss="ce").gradient
        delta = norm.project(eps * norm.step_direction(gradient), eps)
        return tf.clip_by_value(x + delta, *classifier.bounds)

    return compile_with_signature(step, signature)


@dataclass
class CheckFindings:
    """Verified adversarials the checks found (inside the ball and the bounds, misclassified
    by a fresh forward pass): ``found`` bool [E, N]."""

    found: np.ndarray

    @classmethod
    def none(cls, num_eps: int, num_examples: int) -> CheckFindings:
        """Nothing found yet."""
        return cls(np.zeros((num_eps, num_examples), bool))

    def record(self, e: int, idx: np.ndarray, hit: np.ndarray) -> None:
        """Examples ``idx[hit]`` have a verified adversarial at the e-th eps (and so at every
        larger one)."""
        self.found[e:, idx[hit]] = True

    def lower(self, records: ExampleRecords) -> int:
        """Lower ``records`` (in place) by what the checks found: examples robust under the
        suite but broken by a check become broken (``broken_by`` = BY_CHECK). Returns how many
        (example, eps) pairs changed."""
        newly = self.found & records.robust
        records.robust &= ~newly
        records.broken_by[newly] = BY_CHECK
        return int(newly.sum())


@dataclass(frozen=True)
class CheckContext:
    """The four pieces every check receives."""

    data: CheckData
    suite: SuiteRun
    attacker: CheckAttacker
    findings: CheckFindings
