"""`Validator`: clean and robust accuracy of the model being trained, measured with
:mod:`robustkit.evaluation`'s machinery, on one device or over the trainer's strategy.

The attack runs through the evaluator's :class:`~robustkit.evaluation.engine.Executor` (compiled
chunks, sharded over the replicas of a ``tf.distribute`` strategy) and its cascade
(:func:`~robustkit.evaluation.cascade.run_cascade`): every example draws its random numbers from
its own key, every claimed adversarial is re-checked by a fresh forward pass, and an example is
robust when it is clean-correct and no attack broke it (:func:`robustkit.attacks.is_robust`).
So a validation number is the number :func:`robustkit.evaluation.evaluate` gives for the same
attack, seed and data, whatever the batching or the strategy.

The default validation attack is APGD-CE (Croce & Hein 2020) in the training threat model's
ball: stronger than the PGD a model is trained against, so the epoch kept as best is the one
that is robust, not the one the training attack likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robustkit.attacks import APGD, Attack
from robustkit.attacks.base import require_gradient_attack
from robustkit.errors import InputError
from robustkit.evaluation import SuiteAttack
from robustkit.evaluation.cascade import run_cascade
from robustkit.evaluation.engine import MAIN_STREAM, Executor, keys_for
from robustkit.losses import cross_entropy
from robustkit.models import Classifier
from robustkit.norms import Norm

VALIDATION_STEPS = 20  # APGD steps of the default validation attack (21 gradient evaluations)
EVALUATION_BATCH = 500  # examples per compiled chunk (per replica under a strategy)

ValidationAttack = Attack | Sequence[Attack | SuiteAttack]


def default_validation_attack(norm: Norm, seed: int) -> APGD:
    """APGD-CE in the ball ``norm`` (the training attack's norm and full eps): one restart of
    :data:`VALIDATION_STEPS` steps, early stopping once an example is broken."""
    return APGD(norm, steps=VALIDATION_STEPS, loss="ce", seed=seed)


class Validator:
    """Clean and robust accuracy and loss under one attack or a suite of attacks.

    Args:
        classifier: the model, in pixel space (evaluated in inference mode).
        attack: a robustkit gradient attack, or a suite: a sequence of attacks and
            :class:`~robustkit.evaluation.SuiteAttack` entries (e.g.
            ``robustkit.evaluation.quick_suite()``) run as a cascade.
        norm: the ball a suite's SuiteAttack entries are built in; attacks given as instances
            must share it. One attack instance brings its own ball.
        strategy: the ``tf.distribute`` strategy to shard chunks over (None: default device).
        seed: seed of every random draw of a suite; one attack instance uses its own seed, so
            the numbers are those ``attack(classifier, x, y)`` gives.
        batch_size: examples per compiled chunk (per replica).
    """

    def __init__(
        self,
        classifier: Classifier,
        attack: ValidationAttack,
        norm: Norm,
        *,
        strategy: Any,
        seed: int,
        batch_size: int = EVALUATION_BATCH,
    ) -> None:
        self.classifier = classifier
        if isinstance(attack, Attack):
            self.norm, self.seed = attack.norm, attack.seed
            entries: Sequence[Attack | SuiteAttack] = [attack]
        elif isinstance(attack, Sequence) and not isinstance(attack, str) and attack:
            self.norm, self.seed = norm, int(seed)
            entries = attack
        else:
            raise InputError(
                "validation_attack must be a robustkit attack or a non-empty sequence of "
                f"attacks and SuiteAttack entries, got {attack!r}."
            )
        self.attacks = [self._built(entry) for entry in entries]
        self.executor = Executor(classifier, strategy, batch_size)

    def _built(self, entry: Attack | SuiteAttack) -> tuple[SuiteAttack, Attack]:
        """(suite entry, attack instance) of one validation attack, checked."""
        if isinstance(entry, SuiteAttack):
            spec, attack = entry, entry.build(self.norm, seed=self.seed)
        else:
            spec, attack = SuiteAttack.from_attack(entry), entry
            if (attack.norm.name, attack.norm.eps) != (self.norm.name, self.norm.eps):
                raise InputError(
                    f"The validation attacks must share one threat model: {attack!r} is not in "
                    f"the ball {self.norm!r}."
                )
        require_gradient_attack(attack, "validation_attack")
        return spec, attack

    def measure(self, x: Any, y: Any) -> dict[str, float]:
        """Metrics of images x [N, H, W, C] (floats in bounds) with labels y int [N], N >= 1.

        Returns ``{"clean_loss", "clean_accuracy", "adv_loss", "adv_accuracy"}``: mean
        cross-entropy (nats) and accuracy on the clean images; the same at the adversarial each
        example keeps (its breaking point, or the strongest point found when none broke it);
        adv_accuracy is robust accuracy.
        """
        x = self.classifier.validate_images(x, name="validation images").numpy()
        if len(x) == 0:
            raise InputError("The validation images hold no examples.")
        y = self.classifier.validate_labels(y, len(x), name="validation labels").numpy()
        chunk = self.executor.batch_size
        clean_logits = self.classifier.predict_logits(x, chunk)
        keys = keys_for(self.seed, MAIN_STREAM, np.arange(len(x)))
        result = run_cascade(
            self.executor, self.attacks, self.norm, x, y, clean_logits, keys, keep_images=True
        )
        adv_logits = self.classifier.predict_logits(result.x_adv, chunk)
        return {
            "clean_loss": _mean_cross_entropy(clean_logits, y),
            "clean_accuracy": float(np.mean(clean_logits.argmax(axis=1) == y)),
            "adv_loss": _mean_cross_entropy(adv_logits, y),
            "adv_accuracy": float(np.mean(result.robust)),
        }


def _mean_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy (nats) of logits [N, K] for labels y [N]."""
    return float(np.mean(cross_entropy(logits, y).numpy(), dtype=np.float64))
