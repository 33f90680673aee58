"""Auto-PGD (Croce & Hein 2020, Algorithm 1): PGD with momentum and a step size that halves at
checkpoints where progress stalls, restarting from the best point; and APGD-T, its targeted
variant on the targeted DLR loss over the top-k other classes (AutoAttack's APGD-T).

Per restart: start at ``x + eps * t / ||t||`` (t uniform for Linf, Gaussian for L2), step size
``2 eps``, momentum 0.75. Checkpoints fall after ``p_1 = 0.22`` of the steps, the interval
shrinking by 0.03 of the steps each time down to 0.06. At a checkpoint an example halves its
step and returns to its best point when the objective rose in at most ``rho`` of the interval's
steps, or when the step was not halved at the last checkpoint and the best objective has not
improved since. All bookkeeping is per example, so early stopping changes nothing but cost.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from robustkit import seeding
from robustkit.attacks.base import Attack
from robustkit.attacks.search import (
    SearchState,
    broadcast_rows,
    compact,
    count_step,
    for_each_run,
    is_success,
    keep_best,
    normalised_start,
    while_active,
)
from robustkit.errors import InputError, positive_int
from robustkit.gradients import input_gradients
from robustkit.losses import dlr_targeted, get_attack_loss
from robustkit.models import Classifier
from robustkit.norms import Norm, l2_distance

MOMENTUM = 0.75  # weight of the new step; 0.25 goes to the previous move
FIRST_CHECKPOINT = 0.22  # share of the steps before the first checkpoint
INTERVAL_DECREASE = 0.03  # share by which each checkpoint interval is shorter than the last
MIN_INTERVAL = 0.06  # shortest interval, as a share of the steps
_TINY = 1e-12


def checkpoint_intervals(steps: int) -> tuple[int, int, int]:
    """(first interval, decrease, minimum) in steps, as the reference implementation rounds."""
    return (
        max(int(FIRST_CHECKPOINT * steps), 1),
        max(int(INTERVAL_DECREASE * steps), 1),
        max(int(MIN_INTERVAL * steps), 1),
    )


class APGD(Attack):
    """Auto-PGD, untargeted, on cross-entropy or DLR (AutoAttack's APGD-CE and APGD-DLR).

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` must be None).
        eps: radius of the ball, in pixel units of the classifier's bounds.
        steps: iterations per restart (one gradient evaluation each, plus one at the start).
        restarts: independent runs from random starts; examples broken stop early.
        loss: "ce" or "dlr" (or any attack loss name or callable ``(logits, labels) -> [N]``).
        rho: the share of steps in a checkpoint interval in which the objective must rise for
            the step size to stay (0.75).
        early_stop: stop spending steps on an example once it is adversarial.
        seed: seed of every random draw; the same seed gives the same bytes.
    """

    targetable = False

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        rho: float = 0.75,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(norm, eps, early_stop=early_stop, seed=seed)
        if not 0 < float(rho) <= 1:
            raise InputError(f"rho must be in (0, 1], got {rho!r}.")
        self.steps = positive_int(steps, "steps")
        self.restarts = positive_int(restarts, "restarts")
        self.loss = loss
        self._loss_function = get_attack_loss(loss)
        self.rho = float(rho)

    def _options(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "loss": getattr(self.loss, "__name__", self.loss),
            "rho": self.rho,
        }

    def budget(self, num_classes: int) -> int:
        return (self.steps + 1) * self.restarts  # each run: the start and ``steps`` iterations

    def objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        value = self._loss_function(logits, labels)
        return -value if targeted else value

    # ---------------------------------------------------------------- one run

    def _direction(self, gradient: tf.Tensor) -> tf.Tensor:
        if self.norm.name == "linf":
            return tf.sign(gradient)
        return gradient / broadcast_rows(l2_distance(gradient) + _TINY, gradient)

    def _project(self, x_clean: tf.Tensor, x_new: tf.Tensor, eps: tf.Tensor, bounds) -> tf.Tensor:
        return tf.clip_by_value(x_clean + self.norm.project(x_new - x_clean, eps), *bounds)

    def _single_run(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        targets: tf.Tensor | None,
        keys: tf.Tensor,
        eps: tf.Tensor,
        state: SearchState,
    ) -> SearchState:
        """One APGD run from a random start on the examples ``state`` has not broken."""
        bounds = classifier.bounds
        first, decrease, shortest = checkpoint_intervals(self.steps)
        index = tf.range(tf.shape(x)[0])
        if self.early_stop:
            index = tf.boolean_mask(index, ~state.success)
        target_all = labels if targets is None else targets
        x_clean, labels_now, targets_now, keys_now = (
            tf.gather(t, index) for t in (x, labels, target_all, keys)
        )

        def loss_of(logits: tf.Tensor, labels_now: tf.Tensor, targets_now: tf.Tensor):
            if targets is None:
                return self._loss_function(logits, labels_now)
            return dlr_targeted(logits, labels_now, targets_now)

        def evaluate(x_now, labels_now, targets_now):
            def loss(logits: tf.Tensor, stacked: tf.Tensor) -> tf.Tensor:
                return loss_of(logits, stacked[:, 0], stacked[:, 1])

            stacked = tf.stack([labels_now, targets_now], axis=1)
            return input_gradients(classifier, x_now, stacked, loss=loss)

        def attack_active(state: SearchState) -> SearchState:
            x_now = normalised_start(self.norm.name, x_clean, keys_now, eps, bounds)
            gradient, logits, loss = evaluate(x_now, labels_now, targets_now)
            success = is_success(logits, labels_now, False)
            state = keep_best(count_step(state, index), index, x_now, logits, loss, success)
            m = tf.shape(index)[0]
            per_example = {
                "index": index,
                "x_clean": x_clean,
                "labels": labels_now,
                "targets": targets_now,
                "x_now": x_now,
                "x_prev": x_now,
                "gradient": gradient,
                "x_best": x_now,
                "gradient_best": gradient,
                "loss_best": loss,
                # The reference compares the first iterate's loss with an unset (zero) entry.
                "loss_prev": tf.zeros_like(loss),
                "step": tf.fill([m], 2.0) * eps,
                "increases": tf.zeros([m], tf.int32),
                "best_at_check": loss,
                "reduced_at_check": tf.ones([m], tf.bool),
                "success": success,
            }

            def condition(i, since_check, interval, active, state):
                return (i < self.steps) & (tf.size(active["index"]) > 0)

            def leave_if_broken(active: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
                if not self.early_stop:
                    return active
                return dict(zip(active, compact(~active["success"], *active.values()), strict=True))

            per_example = leave_if_broken(per_example)

            def body(i, since_check, interval, active, state):
                a = tf.where(i > 0, MOMENTUM, 1.0)
                step = broadcast_rows(active["step"], active["x_now"])
                moved = self._project(
                    active["x_clean"],
                    active["x_now"] + step * self._direction(active["gradient"]),
                    eps,
                    bounds,
                )
                previous_move = active["x_now"] - active["x_prev"]
                x_new = self._project(
                    active["x_clean"],
                    active["x_now"] + a * (moved - active["x_now"]) + (1 - a) * previous_move,
                    eps,
                    bounds,
                )
                gradient, logits, loss = evaluate(x_new, active["labels"], active["targets"])
                success = is_success(logits, active["labels"], False)
                rows_of = active["index"]
                state = keep_best(count_step(state, rows_of), rows_of, x_new, logits, loss, success)
                improved = loss > active["loss_best"]
                rows = broadcast_rows(improved, x_new)
                increases = active["increases"] + tf.cast(loss > active["loss_prev"], tf.int32)
                updated = {
                    **active,
                    "x_prev": active["x_now"],
                    "x_now": x_new,
                    "gradient": gradient,
                    "x_best": tf.where(rows, x_new, active["x_best"]),
                    "gradient_best": tf.where(rows, gradient, active["gradient_best"]),
                    "loss_best": tf.where(improved, loss, active["loss_best"]),
                    "loss_prev": loss,
                    "increases": increases,
                    "success": success,
                }
                since_check += 1
                at_check = tf.equal(since_check, interval)

                def checkpoint():
                    oscillating = tf.cast(increases, tf.float32) <= self.rho * tf.cast(
                        interval, tf.float32
                    )
                    stalled = ~updated["reduced_at_check"] & (
                        updated["best_at_check"] >= updated["loss_best"]
                    )
                    reduce = oscillating | stalled
                    back = broadcast_rows(reduce, x_new)
                    return {
                        **updated,
                        "step": tf.where(reduce, updated["step"] / 2, updated["step"]),
                        "x_now": tf.where(back, updated["x_best"], updated["x_now"]),
                        "gradient": tf.where(back, updated["gradient_best"], updated["gradient"]),
                        "increases": tf.zeros_like(increases),
                        "best_at_check": updated["loss_best"],
                        "reduced_at_check": reduce,
                    }

                updated = tf.cond(at_check, checkpoint, lambda: updated)
                interval = tf.where(at_check, tf.maximum(interval - decrease, shortest), interval)
                since_check = tf.where(at_check, 0, since_check)
                return i + 1, since_check, interval, leave_if_broken(updated), state

            *_, state = while_active(
                condition,
                body,
                (tf.constant(0), tf.constant(0), tf.constant(first), per_example, state),
            )
            return state

        # Some kernels reject empty batches: nothing to attack, no forward pass.
        return tf.cond(tf.size(index) > 0, lambda: attack_active(state), lambda: state)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        if targeted:
            raise InputError(
                f"{type(self).__name__} is untargeted (it succeeds when the prediction leaves "
                "the label); use APGDT for targeted DLR, or PGD for a targeted attack."
            )

        def one_run(restart: tf.Tensor, state: SearchState) -> SearchState:
            restart_keys = seeding.fold_in(keys, restart)
            return self._single_run(classifier, x, labels, None, restart_keys, eps, state)

        return for_each_run(self.restarts, one_run, state)


class APGDT(APGD):
    """APGD-T: APGD on the targeted DLR loss, against each of the ``targets`` classes the clean
    image's logits rank highest after the top one, in turn (AutoAttack standard: 9).

    Success is untargeted (any misclassification), as in AutoAttack; examples broken by one
    target pass are not attacked by the next.
    """

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        steps: int = 100,
        restarts: int = 1,
        targets: int = 9,
        rho: float = 0.75,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        targets = positive_int(targets, "targets")
        super().__init__(
            norm, eps, steps=steps, restarts=restarts, loss="dlr", rho=rho,
            early_stop=early_stop, seed=seed,
        )  # fmt: skip
        self.targets = int(targets)

    def _options(self) -> dict[str, Any]:
        options = super()._options()
        options["loss"] = "dlr-targeted"
        return {**options, "targets": self.targets}

    def budget(self, num_classes: int) -> int:
        return super().budget(num_classes) * min(self.targets, num_classes - 1)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        if targeted:
            raise InputError(
                "APGDT picks its own target classes and succeeds on any misclassification; "
                "call it untargeted with the true labels."
            )
        runs = min(self.targets, classifier.num_classes - 1) * self.restarts
        ranked = tf.cast(
            tf.argsort(classifier.logits(x), axis=-1, direction="DESCENDING"), tf.int32
        )

        def one_run(run: tf.Tensor, state: SearchState) -> SearchState:
            # Target pass t aims at the (t + 2)-th most likely class of the clean image (the
            # reference's ``sort()[:, -target_class]``, target_class = t + 2). One in-graph loop
            # over passes and restarts (for_each_run).
            t, restart = run // self.restarts, run % self.restarts
            targets = tf.gather(ranked, t + 1, axis=1)
            pass_keys = seeding.fold_in(seeding.fold_in(keys, 1000 + t), restart)
            return self._single_run(classifier, x, labels, targets, pass_keys, eps, state)

        return for_each_run(runs, one_run, state)
