"""Projected gradient descent (Madry et al. 2018) and FGSM as its one-step case.

Only the step rule lives here; the batch driver, seeding, clean judgment, best-iterate
bookkeeping and early-stop compaction are the core's (:mod:`robustkit.attacks.base`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.attacks.base import Attack
from robustkit.attacks.search import (
    AttackTensors,
    SearchState,
    compact,
    count_step,
    is_success,
    keep_best,
    while_active,
)
from robustkit.errors import InputError, positive_int
from robustkit.gradients import input_gradients
from robustkit.losses import LossFunction, get_attack_loss
from robustkit.models import Classifier
from robustkit.norms import Norm
from robustkit.seeding import fold_in


class PGD(Attack):
    """Projected gradient descent in a Linf or L2 ball.

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` must be None).
        eps: radius of the ball, in pixel units of the classifier's bounds (e.g. ``8/255``).
        steps: gradient steps per restart.
        step_size: absolute step size (pixel units), fixed whatever the radius ``run`` gets.
        rel_step_size: step size as a fraction of eps (exclusive with ``step_size``); default
            ``2.5 / steps``, so the steps span 2.5 radii.
        random_start: start from a uniform draw in the ball instead of the clean image.
        restarts: independent runs; each example keeps its best (successful first, then the
            highest loss).
        loss: "ce", "margin" (Carlini-Wagner), "dlr" or a callable ``(logits, labels) -> [N]``.
        early_stop: stop spending steps on an example once it is adversarial (evaluation mode).
            Off, every example gets the full budget (training mode). Success is the same
            either way: an example counts as broken if any iterate was adversarial.
        quantize: number of grid steps across the bounds (255 for 8-bit images). The result is
            snapped to that grid inside the ball, then ``grid_steps`` more steps run on the grid
            so that what is saved as an image is what was evaluated.
        grid_steps: gradient steps on the grid after snapping (only with ``quantize``).
        seed: seed of every random draw; the same seed gives the same bytes.
    """

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        steps: int = 40,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str | LossFunction = "ce",
        early_stop: bool = True,
        quantize: int | None = None,
        grid_steps: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__(norm, eps, early_stop=early_stop, seed=seed)
        steps, restarts = positive_int(steps, "steps"), positive_int(restarts, "restarts")
        if step_size is not None and rel_step_size is not None:
            raise InputError("Give step_size or rel_step_size, not both.")
        if step_size is None and rel_step_size is None:
            rel_step_size = 2.5 / int(steps)
        for name, value in (("step_size", step_size), ("rel_step_size", rel_step_size)):
            if value is not None and not float(value) >= 0:
                raise InputError(f"{name} must be >= 0, got {value!r}.")
        if quantize is not None and int(quantize) < 1:
            raise InputError(f"quantize must be a number of grid steps >= 1, got {quantize!r}.")
        if int(grid_steps) < 0:
            raise InputError(f"grid_steps must be >= 0, got {grid_steps!r}.")
        self.steps = int(steps)
        self.fixed_step_size = None if step_size is None else float(step_size)
        self.rel_step_size = None if rel_step_size is None else float(rel_step_size)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self._loss_function = get_attack_loss(loss)
        self.quantize = None if quantize is None else int(quantize)
        self.grid_steps = int(grid_steps) if quantize is not None else 0

    @property
    def step_size(self) -> float:
        """The step size (pixel units) at the norm's own eps."""
        if self.fixed_step_size is not None:
            return self.fixed_step_size
        return float(self.rel_step_size) * self.norm.eps

    def step_at(self, eps: tf.Tensor | float) -> tf.Tensor | float:
        """The step size at radius ``eps``."""
        if self.fixed_step_size is not None:
            return self.fixed_step_size
        return float(self.rel_step_size) * eps

    def _options(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "rel_step_size": self.rel_step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "loss": getattr(self.loss, "__name__", self.loss),
            "quantize": self.quantize,
            "grid_steps": self.grid_steps,
        }

    def budget(self, num_classes: int) -> int:
        return self.steps * self.restarts + self.grid_steps

    def objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        value = self._loss_function(logits, labels)
        return -value if targeted else value

    # ---------------------------------------------------------------- in-graph search

    def _descend(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        start: tf.Tensor,
        state: SearchState,
        *,
        eps: tf.Tensor,
        steps: int,
        step_size: tf.Tensor | float,
        targeted: bool,
        spacing: tf.Tensor | None,
    ) -> SearchState:
        """Run ``steps`` gradient steps from ``start`` on the examples still worth attacking.

        Each iterate (the start included, the last one by a forward pass only) is judged and
        kept in ``state`` where it beats the example's best.
        """
        low, high = classifier.bounds
        norm = self.norm

        def step(x_clean, x_now, gradient):
            moved = x_now + step_size * norm.step_direction(gradient)
            delta = norm.project(moved - x_clean, eps)
            if spacing is not None:
                delta = norm.snap_to_grid(delta, spacing, eps)
            return tf.clip_by_value(x_clean + delta, low, high)

        index = tf.range(tf.shape(x)[0])
        if self.early_stop:
            index = tf.boolean_mask(index, ~state.success)
        x_clean, x_now, labels_now = (tf.gather(t, index) for t in (x, start, labels))

        def condition(k, index, x_clean, x_now, labels_now, state):
            return (k < steps) & (tf.size(index) > 0)

        def body(k, index, x_clean, x_now, labels_now, state):
            gradient, logits, loss = input_gradients(
                classifier, x_now, labels_now, loss=self._loss_function, targeted=targeted
            )
            success = is_success(logits, labels_now, targeted)
            rows = index if self.early_stop else None  # full budget: every row, in order
            state = keep_best(count_step(state, rows), rows, x_now, logits, loss, success)
            if self.early_stop:
                index, x_clean, x_now, labels_now, gradient = compact(
                    ~success, index, x_clean, x_now, labels_now, gradient
                )
            return k + 1, index, x_clean, step(x_clean, x_now, gradient), labels_now, state

        _, index, _, x_now, labels_now, state = while_active(
            condition, body, (tf.constant(0), index, x_clean, x_now, labels_now, state)
        )

        def judge_last_iterate() -> SearchState:
            logits = classifier.logits(x_now)
            objective = self.objective(logits, labels_now, targeted)
            success = is_success(logits, labels_now, targeted)
            rows = index if self.early_stop else None
            return keep_best(state, rows, x_now, logits, objective, success)

        # Some kernels reject empty batches, so an empty active set skips the forward pass.
        return tf.cond(tf.size(index) > 0, judge_last_iterate, lambda: state)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        low, high = classifier.bounds
        for restart in range(self.restarts):
            start = x
            if self.random_start:
                delta = self.norm.random_start(tf.shape(x), fold_in(keys, restart), eps)
                start = tf.clip_by_value(x + delta, low, high)
            state = self._descend(
                classifier,
                x,
                labels,
                start,
                state,
                eps=eps,
                steps=self.steps,
                step_size=self.step_at(eps),
                targeted=targeted,
                spacing=None,
            )
        return state

    def _finish(self, classifier, x, labels, keys, eps, state, targeted) -> AttackTensors:
        success_unquantized = state.success
        if self.quantize is not None:
            low, high = classifier.bounds
            n = tf.shape(x)[0]
            spacing = (high - low) / self.quantize
            snapped = tf.clip_by_value(
                x + self.norm.snap_to_grid(state.x - x, spacing, eps), low, high
            )
            fresh = state._replace(
                loss=tf.fill((n,), -np.inf), success=tf.zeros((n,), tf.bool), x=snapped
            )
            step = self.step_at(eps)
            grid_step = tf.maximum(step, spacing) if self.norm.name == "l2" else spacing
            state = self._descend(
                classifier,
                x,
                labels,
                snapped,
                fresh,
                eps=eps,
                steps=self.grid_steps,
                step_size=grid_step,
                targeted=targeted,
                spacing=spacing,
            )
        return AttackTensors(state.x, state.logits, state.success, success_unquantized, state.steps)


class FGSM(PGD):
    """Fast gradient sign method: one step of size eps (Goodfellow et al. 2015).

    With ``random_start`` it is FGSM-RS (Wong et al. 2020), whose step defaults to 1.25 * eps.
    """

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        step_size: float | None = None,
        rel_step_size: float | None = None,
        random_start: bool = False,
        loss: str | LossFunction = "ce",
        early_stop: bool = True,
        quantize: int | None = None,
        grid_steps: int = 0,
        seed: int = 0,
    ) -> None:
        if step_size is None and rel_step_size is None:
            rel_step_size = 1.25 if random_start else 1.0
        super().__init__(
            norm,
            eps,
            steps=1,
            step_size=step_size,
            rel_step_size=rel_step_size,
            random_start=random_start,
            restarts=1,
            loss=loss,
            early_stop=early_stop,
            quantize=quantize,
            grid_steps=grid_steps,
            seed=seed,
        )
