"""Guards that watch one number per epoch and decide: keep these weights, stop, or roll back.

:class:`RobustEarlyStopping` is shaped like ``keras.callbacks.EarlyStopping(
restore_best_weights=True)`` on robust validation accuracy (Rice et al. 2020): it keeps the
weights of the best epoch, stops after ``patience`` epochs without a better one and puts the
best weights back at the end. :class:`OverfitGuard` catches catastrophic overfitting (Wong et
al. 2020) on a fixed training batch and stops or rolls back to the last good epoch.

Both own their state as ``tf.Variable``s, so a ``tf.train.Checkpoint`` saves and restores them
with the model (a guard's checkpoint includes the variables it watches; a checkpoint that also
holds the model stores them once). Build them inside the strategy scope of those variables.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.training.history import TrainingHistory
from robustkit.training.state import WeightSnapshot
from robustkit.training.validation import Validator

logger = logging.getLogger(__name__)

MODES = ("max", "min")
GUARD_ACTIONS = ("stop", "rollback", "monitor")


class RobustEarlyStopping(tf.Module):
    """Best-epoch weights and patience on one monitored metric.

    Args:
        variables: the variables to keep and restore (the model's weights).
        monitor: key of the per-epoch logs to watch.
        mode: "max" (higher is better, e.g. robust accuracy) or "min".
        patience: stop after this many epochs in a row without a strictly better value
            (None: never stop).
        restore_best_weights: :meth:`on_train_end` puts the best epoch's weights back.

    Call :meth:`reset` before a fresh run, :meth:`on_epoch_end` after every epoch and
    :meth:`on_train_end` at the end. The first epoch is always the best so far.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        monitor: str = "val_adv_accuracy",
        mode: str = "max",
        patience: int | None = None,
        restore_best_weights: bool = True,
    ) -> None:
        super().__init__(name="robust_early_stopping")
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}.")
        if patience is not None and int(patience) < 0:
            raise InputError(f"patience must be >= 0 or None, got {patience!r}.")
        self.monitor = monitor
        self.mode = mode
        self.patience = None if patience is None else int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self._watched = list(variables)
        self._best = tf.Variable(self._worst, dtype=tf.float64, trainable=False, name="best")
        self._best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self._wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        self._stopped_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="stopped")
        self._snapshot = WeightSnapshot(self._watched, name="best_weights")

    @property
    def _worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    @property
    def best(self) -> float | None:
        """The best monitored value so far (None before the first epoch)."""
        return None if self.best_epoch is None else float(self._best.numpy())

    @property
    def best_epoch(self) -> int | None:
        """The epoch (0-based) of the best value (None before the first epoch)."""
        epoch = int(self._best_epoch.numpy())
        return None if epoch < 0 else epoch

    @property
    def wait(self) -> int:
        """Epochs in a row since the best one."""
        return int(self._wait.numpy())

    @property
    def stopped_epoch(self) -> int | None:
        """The epoch after which patience ran out (None while it has not)."""
        epoch = int(self._stopped_epoch.numpy())
        return None if epoch < 0 else epoch

    @property
    def best_weights(self) -> list[np.ndarray] | None:
        """Copies of the watched variables at the best epoch (None before the first epoch)."""
        if self.best_epoch is None:
            return None
        return [copy.numpy() for copy in self._snapshot.copies]

    def reset(self) -> None:
        """Forget every epoch seen (a fresh run)."""
        self._best.assign(self._worst)
        self._best_epoch.assign(-1)
        self._wait.assign(0)
        self._stopped_epoch.assign(-1)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> bool:
        """Take this epoch's value of ``monitor``; True when training should stop now.

        A strictly better value keeps the current weights as the best; otherwise the epoch
        counts against ``patience``. NaN is never better.
        """
        if self.monitor not in logs:
            raise InputError(
                f"RobustEarlyStopping monitors {self.monitor!r}, which the epoch logs lack "
                f"(they hold {sorted(logs)}); pass validation data or monitor another metric."
            )
        value = float(logs[self.monitor])
        best = float(self._best.numpy())
        if value > best if self.mode == "max" else value < best:
            self._best.assign(value)
            self._best_epoch.assign(epoch)
            self._wait.assign(0)
            self._snapshot.take(self._watched)
            return False
        self._wait.assign_add(1)
        if self.patience is not None and self.wait >= self.patience:
            self._stopped_epoch.assign(epoch)
            return True
        return False

    def on_train_end(self) -> bool:
        """Put the best epoch's weights back (with ``restore_best_weights``); True if it did."""
        if not self.restore_best_weights or self.best_epoch is None:
            return False
        self._snapshot.put_back(self._watched)
        return True


@dataclass(frozen=True)
class GuardDecision:
    """What :meth:`OverfitGuard.on_epoch_end` saw and did.

    reasons: why it fired (empty when it did not); reference: the best validation-attack
    accuracy of earlier epochs (-1.0 before any); stop_reason: "overfit_guard" (action
    "stop"), "overfit_guard_rollbacks" (more firings than ``max_rollbacks``) or None.
    """

    reasons: tuple[str, ...]
    reference: float
    stop_reason: str | None

    @property
    def fired(self) -> bool:
        """True when catastrophic overfitting was seen this epoch."""
        return bool(self.reasons)


class OverfitGuard(tf.Module):
    """Catastrophic-overfitting guard on a fixed training batch.

    Each epoch it gets two robust accuracies on that batch: under the validation attack and
    under the training attack at the same radius. It fires when the first falls more than
    ``drop`` below the best seen in earlier epochs (a collapse), or lies more than ``drop``
    below the second (the training attack is fooled: overfitting that set in before any
    robustness was learned).

    Args:
        variables: what a roll-back restores (model weights and optimizer variables).
        action: on firing, "stop" restores the last good epoch and stops, "rollback" restores
            it and carries on (stopping at the firing after ``max_rollbacks``), "monitor" only
            reports it.
        drop: the accuracy gap that fires the guard (a fraction, e.g. 0.2).
        max_rollbacks: roll-backs allowed before "rollback" stops.
    """

    def __init__(
        self,
        variables: Sequence[tf.Variable],
        action: str = "stop",
        drop: float = 0.2,
        max_rollbacks: int = 3,
    ) -> None:
        super().__init__(name="overfit_guard")
        if action not in GUARD_ACTIONS:
            raise InputError(f"The guard action must be one of {GUARD_ACTIONS}, got {action!r}.")
        self.action = action
        self.drop = float(drop)
        self.max_rollbacks = int(max_rollbacks)
        self._watched = list(variables)
        self._reference = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="reference")
        self._firings = tf.Variable(0, dtype=tf.int64, trainable=False, name="firings")
        self._last_good = WeightSnapshot(self._watched, name="last_good")

    @property
    def reference(self) -> float:
        """The best validation-attack accuracy of the epochs kept (-1.0 before any)."""
        return float(self._reference.numpy())

    @property
    def firings(self) -> int:
        """How many epochs the guard fired in."""
        return int(self._firings.numpy())

    def reset(self) -> None:
        """A fresh run: no reference, no firings, the current variables as the last good ones."""
        self._reference.assign(-1.0)
        self._firings.assign(0)
        self._last_good.take(self._watched)

    def on_epoch_end(self, accuracy: float, training_attack_accuracy: float) -> GuardDecision:
        """Judge this epoch from the guard batch's robust accuracies (fractions) under the
        validation attack and the training attack; roll back when it fires (unless
        monitoring), else keep these variables as the last good ones."""
        reference = self.reference
        reasons = []
        if reference - accuracy > self.drop:
            reasons.append(
                f"validation-attack accuracy fell from {reference:.3f} to {accuracy:.3f}"
            )
        if training_attack_accuracy - accuracy > self.drop:
            reasons.append(
                f"validation-attack accuracy {accuracy:.3f} but the training attack's "
                f"{training_attack_accuracy:.3f}"
            )
        if not reasons or self.action == "monitor":  # these variables stay
            self._reference.assign(max(reference, accuracy))
            self._last_good.take(self._watched)
        else:
            self._last_good.put_back(self._watched)
        stop_reason = None
        if reasons:
            self._firings.assign_add(1)
            if self.action == "stop":
                stop_reason = "overfit_guard"
            elif self.action == "rollback" and self.firings > self.max_rollbacks:
                stop_reason = "overfit_guard_rollbacks"
        return GuardDecision(tuple(reasons), reference, stop_reason)


def judge_guard_batch(
    guard: OverfitGuard,
    validators: tuple[Validator, Validator],
    data: tuple[np.ndarray, np.ndarray],
    epoch: int,
    logs: dict[str, float],
    history: TrainingHistory,
) -> str | None:
    """Attack the guard batch ``data`` with the validation attack and the training attack
    (``validators``, in that order) and let ``guard`` decide; ``logs`` gains its metrics,
    ``history`` an event when it fires. The reason to stop, or None to carry on."""
    accuracy = validators[0].measure(*data)["adv_accuracy"]
    own = validators[1].measure(*data)["adv_accuracy"]
    decision = guard.on_epoch_end(accuracy, own)
    logs["guard_accuracy"] = accuracy
    logs["guard_training_attack_accuracy"] = own
    logs["guard_fired"] = float(decision.fired)
    if decision.fired:
        reason = "; ".join(decision.reasons)
        history.add_event(
            epoch,
            "overfit_guard",
            action=guard.action,
            guard_accuracy=accuracy,
            reference=decision.reference,
            training_attack_accuracy=own,
            reason=reason,
        )
        logger.warning(
            "Catastrophic overfitting at epoch %d on the guard batch: %s (guard action: %s).",
            epoch + 1,
            reason,
            guard.action,
        )
    return decision.stop_reason
