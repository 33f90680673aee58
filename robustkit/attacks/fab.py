"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020) as AutoAttack's
"standard" version runs it: multi-targeted, Linf or L2, inside an eps-ball.

For each of the ``targets`` classes the clean logits rank highest after the top one, in turn,
and for each restart (the first from the clean point, later ones from
``x + eps / 2 * t / ||t||``), every step:

1. linearises g = f_t - f_y at the iterate x_k (one input gradient);
2. projects x_k and the clean point x_0 onto the hyperplane where the linearised g is zero,
   intersected with the box of the classifier's bounds (exact box-constrained minimal-norm
   projections, :func:`project_onto_hyperplane_linf` and :func:`project_onto_hyperplane_l2`),
   giving perturbations d_k and d_0;
3. steps to ``(1 - a) (x_k + eta d_k) + a (x_0 + eta d_0)`` with
   ``a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)`` (biased towards the clean point,
   ``eta`` overshoots the boundary), clipped to the bounds;
4. if the new point is misclassified, records it and steps back towards x_0:
   ``x_0 + beta (x - x_0)``.

Success is untargeted (any misclassification) and counts only for points within ``eps`` of x,
as AutoAttack's final check does. With early stopping an example leaves as soon as it is broken
(keeping that adversarial) and later passes skip it; without, every example runs every pass
and restart, and its smallest-norm adversarial within eps is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
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
from robustkit.losses import margin
from robustkit.models import Classifier
from robustkit.norms import Norm

_TINY = 1e-12  # guards divisions by a zero norm or weight
_MIN_NORM = 1e-8  # floor of the projection norms in the bias weight (as the reference)
_FAR = 1e30  # breakpoint of a coordinate whose weight is zero (it never binds)
_SELF_TARGETED = (
    "FABT picks its own target classes (the runner-ups of the clean logits) and succeeds on any "
    "misclassification; call it untargeted with the true labels."
)


def _room(points: tf.Tensor, w: tf.Tensor, low: Any, high: Any) -> tf.Tensor:
    """How far each coordinate of points [N, D] can move in the direction of sign(w) before
    leaving the box [low, high] (>= 0)."""
    return tf.maximum(tf.where(w > 0, high - points, points - low), 0.0)


def _oriented(
    points: tf.Tensor, w: tf.Tensor, b: tf.Tensor, low: Any, high: Any
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """The hyperplane ``w . (points + d) = b`` rewritten as ``|w| . (sign(w) * d) = c`` with
    ``c >= 0`` (w and b negated where needed): returns (|w|, sign(w), c, room)."""
    points = tf.convert_to_tensor(points, tf.float32)
    w = tf.convert_to_tensor(w, tf.float32)
    c = tf.convert_to_tensor(b, tf.float32) - tf.reduce_sum(w * points, axis=1)
    flip = tf.where(c < 0, -1.0, 1.0)
    w = w * flip[:, None]
    return tf.abs(w), tf.sign(w), c * flip, _room(points, w, low, high)


def _segment_start(
    reach: tf.Tensor, c: tf.Tensor, *cumulative: tf.Tensor
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """For a nondecreasing piecewise-linear reach [N, D] at sorted breakpoints: whether c [N]
    is reached at all, and each cumulative [N, D] sum taken just before the segment where it is
    (0 before the first breakpoint)."""
    dimension = tf.shape(reach)[1]
    below = tf.reduce_sum(tf.cast(reach < c[:, None], tf.int32), axis=1)
    feasible = below < dimension
    before = tf.maximum(below - 1, 0)
    starts = [
        tf.where(below > 0, tf.gather(values, before[:, None], batch_dims=1)[:, 0], 0.0)
        for values in cumulative
    ]
    return feasible, starts


def project_onto_hyperplane_linf(
    points: tf.Tensor, w: tf.Tensor, b: tf.Tensor, low: Any, high: Any
) -> tf.Tensor:
    """The minimal-Linf perturbation d [N, D] with ``w . (points + d) = b`` and ``points + d``
    in the box [low, high], for points [N, D] in the box, w [N, D], b [N].

    With radius r, the most ``w . d`` can reach is ``sum_i |w_i| min(r, room_i)``; the least r
    reaching b is found by sorting the rooms and a cumulative sum (exact, no iterations). Where
    the box cannot reach the hyperplane, d goes to the nearest corner (every coordinate as far
    as the box allows towards it), as the reference does.
    """
    weight, direction, c, room = _oriented(points, w, b, low, high)
    order = tf.argsort(room, axis=1, stable=True)
    room_sorted = tf.gather(room, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    covered = tf.cumsum(weight_sorted * room_sorted, axis=1)  # sum over coordinates at room
    mass = tf.cumsum(weight_sorted, axis=1)
    total = mass[:, -1:]
    reach = covered + room_sorted * (total - mass)  # max w . d at radius room_sorted[k]
    feasible, (covered_before, mass_before) = _segment_start(reach, c, covered, mass)
    radius = (c - covered_before) / tf.maximum(total[:, 0] - mass_before, _TINY)
    inside = direction * tf.minimum(radius[:, None], room)
    return tf.where(feasible[:, None], inside, direction * room)


def project_onto_hyperplane_l2(
    points: tf.Tensor, w: tf.Tensor, b: tf.Tensor, low: Any, high: Any
) -> tf.Tensor:
    """The minimal-L2 perturbation d [N, D] with ``w . (points + d) = b`` and ``points + d``
    in the box [low, high], for points [N, D] in the box, w [N, D], b [N].

    The solution is ``d = clip(lambda * w, box)`` (KKT); ``w . d`` grows piecewise linearly
    in lambda with breakpoints ``room_i / |w_i|``, so the lambda reaching b comes from sorting
    the breakpoints and a cumulative sum (exact). Where the box cannot reach the hyperplane, d
    goes to the nearest corner, as the reference does. Coordinates with |w_i| <= 1e-12 stay.
    """
    weight, direction, c, room = _oriented(points, w, b, low, high)
    weight = tf.where(weight > _TINY, weight, 0.0)
    breakpoints = tf.where(weight > 0, room / tf.maximum(weight, _TINY), _FAR)
    order = tf.argsort(breakpoints, axis=1, stable=True)
    breakpoints_sorted = tf.gather(breakpoints, order, batch_dims=1)
    weight_sorted = tf.gather(weight, order, batch_dims=1)
    room_sorted = tf.gather(room, order, batch_dims=1)
    covered = tf.cumsum(weight_sorted * room_sorted, axis=1)  # coordinates at their bound
    energy = tf.cumsum(tf.square(weight_sorted), axis=1)
    total = energy[:, -1:]
    reach = covered + breakpoints_sorted * (total - energy)  # w . d at each breakpoint
    feasible, (covered_before, energy_before) = _segment_start(reach, c, covered, energy)
    scale = (c - covered_before) / tf.maximum(total[:, 0] - energy_before, _TINY**2)
    inside = direction * tf.minimum(scale[:, None] * weight, room)
    corner = tf.where(weight > 0, direction * room, 0.0)
    return tf.where(feasible[:, None], inside, corner)


PROJECTIONS = {"linf": project_onto_hyperplane_linf, "l2": project_onto_hyperplane_l2}


def _target_minus_label(logits: tf.Tensor, stacked: tf.Tensor) -> tf.Tensor:
    """f_t - f_y [N] for stacked [N, 2] = (label y, target t)."""
    own = tf.gather(logits, stacked[:, 0:1], batch_dims=1)[:, 0]
    target = tf.gather(logits, stacked[:, 1:2], batch_dims=1)[:, 0]
    return target - own


class FABT(Attack):
    """FAB-T: minimal-norm boundary steps towards each of the ``targets`` runner-up classes of
    the clean logits in turn (AutoAttack standard: 9 targets, 1 restart, 100 steps).

    Success is untargeted (any misclassification) and only adversarials within ``eps`` count.
    An example's result is an adversarial within eps (the first found with early stopping, else
    the smallest-norm one), or when none was found its highest-margin point within eps seen
    (the clean point at worst). ``steps`` in the result counts gradient evaluations.

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` of those (then ``eps`` is None).
        eps: radius of the ball, in pixel units of the classifier's bounds; later restarts start
            at distance eps / 2 from x.
        steps: iterations per restart and target (one gradient evaluation and one forward pass
            each).
        restarts: runs per target; the first from the clean point, the others from random
            points.
        targets: runner-up classes attacked (capped at num_classes - 1).
        alpha_max: the largest weight of the step towards the clean point's projection.
        eta: overshoot of each projection (> 1 lands beyond the linearised boundary).
        beta: backward step: an adversarial iterate x becomes ``x_0 + beta (x - x_0)``.
        early_stop: stop spending steps on an example once it is adversarial within eps.
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
        targets: int = 9,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(norm, eps, early_stop=early_stop, seed=seed)
        if self.norm.name not in PROJECTIONS:
            raise InputError(f"FABT supports the linf and l2 norms, got {self.norm.name!r}.")
        if not 0 <= float(alpha_max) <= 1:
            raise InputError(f"alpha_max must be in [0, 1], got {alpha_max!r}.")
        if not float(eta) > 0:
            raise InputError(f"eta must be > 0 (1.05 overshoots by 5%), got {eta!r}.")
        if not 0 < float(beta) <= 1:
            raise InputError(f"beta must be in (0, 1], got {beta!r}.")
        self.steps = positive_int(steps, "steps")
        self.restarts = positive_int(restarts, "restarts")
        self.targets = positive_int(targets, "targets")
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)

    def _options(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "targets": self.targets,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
        }

    def budget(self, num_classes: int) -> int:
        return self.steps * self.restarts * min(self.targets, num_classes - 1)

    def objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        """The margin (CW) loss [N]: ranks points that are not adversarial (and judges the
        clean point). Adversarials within eps are ranked by their negated norm instead."""
        del targeted
        return margin(logits, labels)

    # ---------------------------------------------------------------- one FAB step

    def _step(
        self,
        x_now: tf.Tensor,
        x_clean: tf.Tensor,
        gradient: tf.Tensor,
        difference: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        """The next iterate [m, ...] from x_now, the gradient of g = f_t - f_y there and g [m]."""
        low, high = bounds
        m = tf.shape(x_now)[0]
        w = tf.reshape(gradient, (m, -1))
        now = tf.reshape(x_now, (m, -1))
        clean = tf.reshape(x_clean, (m, -1))
        b = tf.reduce_sum(w * now, axis=1) - difference  # linearised g is zero on w . z = b
        project = PROJECTIONS[self.norm.name]
        to_now = project(now, w, b, low, high)
        to_clean = project(clean, w, b, low, high)
        size_now = tf.maximum(self.norm.distance(to_now), _MIN_NORM)
        size_clean = tf.maximum(self.norm.distance(to_clean), _MIN_NORM)
        alpha = tf.minimum(size_now / (size_now + size_clean), self.alpha_max)[:, None]
        moved = (now + self.eta * to_now) * (1 - alpha) + (clean + self.eta * to_clean) * alpha
        return tf.clip_by_value(tf.reshape(moved, tf.shape(x_now)), low, high)

    # ---------------------------------------------------------------- one run

    def _single_run(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        targets: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        state: SearchState,
        random_start: tf.Tensor,
    ) -> SearchState:
        """One FAB run towards ``targets`` [N] on the examples ``state`` has not broken, from
        the clean point or (``random_start``, a bool tensor) from a random one."""
        bounds = classifier.bounds
        index = tf.range(tf.shape(x)[0])
        if self.early_stop:
            index = tf.boolean_mask(index, ~state.success)
        x_clean, labels_now, targets_now, keys_now = (
            tf.gather(t, index) for t in (x, labels, targets, keys)
        )

        def attack_active(state: SearchState) -> SearchState:
            x_start = tf.cond(
                random_start,
                lambda: normalised_start(self.norm.name, x_clean, keys_now, 0.5 * eps, bounds),
                lambda: x_clean,
            )
            per_example = {
                "index": index,
                "x_clean": x_clean,
                "stacked": tf.stack([labels_now, targets_now], axis=1),
                "x_now": x_start,
            }

            def condition(i, active, state):
                return (i < self.steps) & (tf.size(active["index"]) > 0)

            def body(i, active, state):
                rows = active["index"]
                stacked = active["stacked"]
                gradient, _, difference = input_gradients(
                    classifier, active["x_now"], stacked, loss=_target_minus_label
                )
                state = count_step(state, rows)
                x_new = self._step(active["x_now"], active["x_clean"], gradient, difference, bounds)
                logits = classifier.logits(x_new)
                adversarial = is_success(logits, stacked[:, 0], False)
                delta = x_new - active["x_clean"]
                distance = self.norm.distance(delta)
                in_ball = distance <= eps
                success = adversarial & in_ball
                ranking = tf.where(
                    success,
                    -distance,
                    tf.where(in_ball, margin(logits, stacked[:, 0]), -np.inf),
                )
                state = keep_best(state, rows, x_new, logits, ranking, success)
                back = broadcast_rows(adversarial, x_new)
                x_next = tf.where(back, active["x_clean"] + self.beta * delta, x_new)
                updated = {**active, "x_now": x_next}
                if self.early_stop:
                    updated = dict(zip(updated, compact(~success, *updated.values()), strict=True))
                return i + 1, updated, state

            *_, state = while_active(condition, body, (tf.constant(0), per_example, state))
            return state

        # Some kernels reject empty batches: nothing to attack, no forward pass.
        return tf.cond(tf.size(index) > 0, lambda: attack_active(state), lambda: state)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        if targeted:
            raise InputError(_SELF_TARGETED)
        n = tf.shape(x)[0]
        clean_logits = tf.cond(
            n > 0,
            lambda: classifier.logits(x),
            lambda: tf.zeros((0, classifier.num_classes)),
        )
        if not self.early_stop:
            # The clean point is a candidate too (norm 0); early stopping judged it already.
            success = is_success(clean_logits, labels, False)
            objective = self.objective(clean_logits, labels, False)
            state = keep_best(state, tf.range(n), x, clean_logits, objective, success)
        ranked = tf.argsort(clean_logits, axis=-1, direction="DESCENDING", stable=True)
        passes = min(self.targets, classifier.num_classes - 1)

        def one_run(run: tf.Tensor, state: SearchState) -> SearchState:
            # One loop over (target pass, restart) keeps the graph to one FAB run. Pass t aims
            # at the (t + 2)-th most likely class of the clean image (the reference's
            # ``sort()[:, -target_class]``, target_class = t + 2).
            t, restart = run // self.restarts, run % self.restarts
            targets = tf.gather(ranked, t + 1, axis=1)
            pass_keys = seeding.fold_in(seeding.fold_in(keys, 1000 + t), restart)
            return self._single_run(
                classifier, x, labels, targets, pass_keys, eps, state, restart > 0
            )

        return for_each_run(passes * self.restarts, one_run, state)
