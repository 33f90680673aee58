"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020): score-based random search.

It needs only logits, never gradients, so it is blind to gradient masking: when it breaks
examples that gradient attacks could not, the gradients were lying. Each query changes the
perturbation inside a random square window and keeps the candidate if the objective (the margin
by default) improved. The window's share ``p`` of the image halves on a fixed schedule
(:func:`p_selection`) from ``p_init``: at fixed shares of the budget (the paper's, rescaled to
it), or at fixed query counts as in AutoAttack's standard Square (``rescale_schedule=False``).

Linf: start from vertical stripes of ``±eps`` (one sign per column and channel); each query sets
one random window to ``±eps`` per channel, the signs redrawn so that the clipped window always
differs from the current one (the reference's resampling loop, done exactly in one draw).

L2: start from a grid of pseudo-Gaussian squares of random sign per channel, scaled to norm
``eps``; each query picks two windows, moves the perturbation mass of both (per channel) plus
the unused budget into the first window with a fresh two-lobed pseudo-Gaussian pattern, empties
the second, and rescales the whole perturbation to norm ``eps`` before clipping to the bounds.

Every random number of example i comes from its own key (:mod:`robustkit.seeding`), per restart
and per query, so results do not depend on the batch or on early stopping. Window corners are
drawn uniformly from ``{0, ..., h - s}`` as in the paper (the reference code's ``randint(0,
h - s)`` leaves out the last position).
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
    while_active,
)
from robustkit.attacks.square_windows import (
    TINY,
    image_norms,
    l2_window_update,
    place_pattern,
    pseudo_gaussian_window,
    square_mask,
)
from robustkit.errors import InputError, positive_int
from robustkit.losses import LossFunction, get_attack_loss
from robustkit.models import Classifier
from robustkit.norms import Norm

# Progress points after which p halves (paper, Appendix A): in 1/10000 of the query budget, or
# in queries when the schedule is not rescaled (the paper's points for a budget of 10,000).
HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
SAME_PIXEL = 1e-7  # the reference's tolerance for "the clipped window did not change"
_MAX_CODED_CHANNELS = 16  # sign patterns are numbered 0 .. 2**channels - 1 up to this many


def p_selection(p_init: float, query: int, queries: int, rescale: bool = True) -> float:
    """The share of the image a window covers at 0-based ``query`` of ``queries`` (the paper's
    piecewise-constant schedule, rescaled to the budget as ``int(query / queries * 10000)``, or
    with ``rescale=False`` read at ``query`` itself, as if the budget were 10,000)."""
    progress = int(query / queries * 10000) if rescale else query
    return p_init / 2 ** sum(progress > point for point in HALVING_POINTS)


class Square(Attack):
    """Square Attack: random search over square windows; needs logits only (no gradients).

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` must be None).
        eps: radius of the ball, in pixel units of the classifier's bounds.
        queries: forward passes per example and restart, the initial point included.
        p_init: share of the image the first windows cover (0 < p_init <= 1); the paper's
            default for robust models is 0.3 (Linf) and 0.1 (L2), AutoAttack's 0.8.
        restarts: independent searches; examples broken by one are not attacked by the next.
        rescale_schedule: halve ``p`` at fixed shares of ``queries`` (True: the paper, the
            reference ``square_attack_l2``) or at fixed query counts 10, 50, 200, ..., 8000
            (False: AutoAttack's standard Square, fra31's ``resc_schedule=False``).
        loss: the objective, "margin" (best other logit minus the label's, the paper's choice),
            "ce" or a callable ``(logits, labels) -> [N]``; negated for targeted attacks.
        early_stop: stop querying an example once it is adversarial.
        seed: seed of every random draw; the same seed gives the same bytes.

    ``AttackResult.steps`` counts forward queries per example.
    """

    gradient_free = True

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        rescale_schedule: bool = True,
        loss: str | LossFunction = "margin",
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(norm, eps, early_stop=early_stop, seed=seed)
        if not 0 < float(p_init) <= 1:
            raise InputError(f"p_init must be in (0, 1], got {p_init!r}.")
        self.queries = positive_int(queries, "queries")
        self.p_init = float(p_init)
        self.restarts = positive_int(restarts, "restarts")
        self.rescale_schedule = bool(rescale_schedule)
        self.loss = loss
        self._loss_function = get_attack_loss(loss)

    def budget(self, num_classes: int) -> int:
        return self.queries * self.restarts  # each restart: the start and queries - 1 more

    def _options(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "p_init": self.p_init,
            "restarts": self.restarts,
            "rescale_schedule": self.rescale_schedule,
            "loss": getattr(self.loss, "__name__", self.loss),
        }

    def objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        value = self._loss_function(logits, labels)
        return -value if targeted else value

    # ---------------------------------------------------------------- schedule

    def _side(self, query: tf.Tensor, shape: tuple[int, int, int]) -> tf.Tensor:
        """Window side in pixels (int32 scalar) at 0-based loop ``query`` for images of
        ``shape`` (H, W, C): ``round(sqrt(p * H * W * C / C))`` with p from :func:`p_selection`,
        at least 1 (Linf) or the next odd number >= 3 (L2), at most ``min(H, W) - 1``.
        Computed in float64, the same operations as the reference, so the rounding matches it
        bit for bit."""
        height, width, channels = shape
        progress = tf.cast(query, tf.int64)
        if self.rescale_schedule:
            fraction = tf.cast(query, tf.float64) / float(self.queries) * 10000.0
            progress = tf.cast(tf.floor(fraction), tf.int64)
        halvings = tf.reduce_sum(
            tf.cast(progress > tf.constant(HALVING_POINTS, tf.int64), tf.int32)
        )
        p = self.p_init / tf.pow(tf.constant(2.0, tf.float64), tf.cast(halvings, tf.float64))
        side = tf.cast(tf.round(tf.sqrt(p * float(height * width * channels) / channels)), tf.int32)
        if self.norm.name == "l2":
            side = tf.maximum(side, 3)
            side = side + 1 - side % 2
        return tf.clip_by_value(side, 1, max(min(height, width) - 1, 1))

    # ---------------------------------------------------------------- starts

    def _start(
        self, x: tf.Tensor, keys: tf.Tensor, eps: tf.Tensor, bounds: tuple[float, float]
    ) -> tf.Tensor:
        """The first candidate for x [m, H, W, C] (one query)."""
        height, width, channels = x.shape[1:]
        if self.norm.name == "linf":
            stripes = seeding.signs(keys, [1, width, channels])  # one sign per column, channel
            return tf.clip_by_value(x + eps * stripes, *bounds)
        delta = self._grid_of_bumps(keys, height, width, channels)
        delta = delta / (image_norms(delta) + TINY) * eps
        return tf.clip_by_value(x + delta, *bounds)

    @staticmethod
    def _grid_of_bumps(keys: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
        """The reference's L2 start [m, H, W, C], unnormalised: squares of side ``s = H // 5``
        tiled from offset ``(H - 5 s) // 2``, each the pseudo-Gaussian pattern (transposed at
        random) times a random sign per channel."""
        side = max(min(height, width) // 5, 1)
        blocks_down, blocks_across = height // side, width // side

        def layout(size: int, blocks: int) -> tuple[np.ndarray, np.ndarray]:
            offset = max((size - 5 * side) // 2, 0)
            position = np.arange(size) - offset
            block = np.where((position >= 0) & (position < blocks * side), position // side, -1)
            return block, np.where(block >= 0, position % side, 0)

        block_row, local_row = layout(height, blocks_down)
        block_col, local_col = layout(width, blocks_across)
        blocks = blocks_down * blocks_across
        inside = (block_row[:, None] >= 0) & (block_col[None, :] >= 0)
        block = np.where(inside, block_row[:, None] * blocks_across + block_col[None, :], 0)
        local_r = np.broadcast_to(local_row[:, None], (height, width))
        local_c = np.broadcast_to(local_col[None, :], (height, width))

        pattern = tf.reshape(pseudo_gaussian_window(side), [-1])
        transpose = seeding.uniform(seeding.fold_in(keys, 0), [blocks]) < 0.5  # [m, blocks]
        signs = seeding.signs(seeding.fold_in(keys, 1), [blocks, channels])  # [m, blocks, C]
        flipped = tf.gather(transpose, block.reshape(-1), axis=1)  # [m, H * W]
        flat = tf.where(
            flipped,
            tf.constant((local_c * side + local_r).reshape(-1), tf.int32),
            tf.constant((local_r * side + local_c).reshape(-1), tf.int32),
        )
        values = tf.gather(pattern, flat)  # [m, H * W]
        block_signs = tf.gather(signs, block.reshape(-1), axis=1)  # [m, H * W, C]
        mask = tf.constant(inside.reshape(-1, 1), tf.float32)
        delta = values[..., None] * block_signs * mask
        return tf.reshape(delta, [-1, height, width, channels])

    # ---------------------------------------------------------------- proposals

    def _propose(
        self,
        x_clean: tf.Tensor,
        x_now: tf.Tensor,
        side: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        """The next candidate [m, H, W, C] from the current iterate x_now (in the ball and
        bounds around x_clean), with windows of ``side`` pixels and per-example ``keys``."""
        propose = self._propose_linf if self.norm.name == "linf" else self._propose_l2
        return propose(x_clean, x_now, side, keys, eps, bounds)

    @staticmethod
    def _corners(
        keys: tf.Tensor, side: tf.Tensor, height: int, width: int
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-example window corners (top, left) [m], uniform in {0, ..., H - side} x
        {0, ..., W - side}."""
        top = seeding.integers(seeding.fold_in(keys, 0), height - side + 1)
        left = seeding.integers(seeding.fold_in(keys, 1), width - side + 1)
        return top, left

    def _propose_linf(
        self,
        x_clean: tf.Tensor,
        x_now: tf.Tensor,
        side: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        """One random window set to ``clip(x ± eps)`` per channel, never a no-op.

        The clipped window equals the current one for at most one sign pattern (each channel
        matches with at most one sign when eps > 0). The reference redraws the signs until they
        change the window; here the pattern is drawn uniformly among the other patterns in one
        draw (patterns numbered by their bits, the no-op number skipped), which is the
        distribution that loop samples from."""
        height, width, channels = x_clean.shape[1:]
        top, left = self._corners(keys, side, height, width)
        window = square_mask(side, top, left, height, width)
        plus = tf.clip_by_value(x_clean + eps, *bounds)
        minus = tf.clip_by_value(x_clean - eps, *bounds)

        def unchanged(values: tf.Tensor) -> tf.Tensor:  # [m, C]: the window already holds them
            same = tf.abs(values - x_now) < SAME_PIXEL
            return tf.reduce_all(same | ~window, axis=[1, 2])

        same_plus, same_minus = unchanged(plus), unchanged(minus)
        if channels <= _MAX_CODED_CHANNELS:
            weights = tf.constant([2**k for k in range(channels)], tf.int32)
            no_op_exists = tf.reduce_all(same_plus | same_minus, axis=1)  # [m]
            no_op_code = tf.reduce_sum(tf.cast(same_plus, tf.int32) * weights, axis=1)
            choices = tf.where(no_op_exists, 2**channels - 1, 2**channels)
            code = seeding.integers(seeding.fold_in(keys, 2), choices)
            code = code + tf.cast(no_op_exists & (code >= no_op_code), tf.int32)
            bits = tf.bitwise.bitwise_and(
                tf.bitwise.right_shift(code[:, None], tf.range(channels)), 1
            )
            positive = bits > 0  # [m, C]
        else:  # a no-op pattern has probability <= 2**-17; drawn plainly
            positive = seeding.signs(seeding.fold_in(keys, 2), [channels]) > 0
        values = tf.where(positive[:, None, None, :], plus, minus)
        return tf.where(window, values, x_now)

    def _propose_l2(
        self,
        x_clean: tf.Tensor,
        x_now: tf.Tensor,
        side: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        bounds: tuple[float, float],
    ) -> tf.Tensor:
        """The reference's L2 update: window 1 gets the pseudo-Gaussian pattern (random transpose
        and sign per channel) plus its old content, rescaled per channel to carry the mass of
        windows 1 and 2 and an equal share of the unused budget; window 2 is emptied; the whole
        perturbation is rescaled to norm eps and the image clipped to the bounds."""
        height, width, channels = x_clean.shape[1:]
        delta = x_now - x_clean
        top, left = self._corners(keys, side, height, width)
        top_2, left_2 = self._corners(seeding.fold_in(keys, 2), side, height, width)
        first = square_mask(side, top, left, height, width)
        union = first | square_mask(side, top_2, left_2, height, width)
        transpose = seeding.uniform(seeding.fold_in(keys, 3), []) < 0.5
        signs = seeding.signs(seeding.fold_in(keys, 4), [1, 1, channels])
        pattern = place_pattern(
            pseudo_gaussian_window(side), side, top, left, transpose, height, width
        )

        delta = l2_window_update(delta, first, union, pattern * signs, eps)
        return tf.clip_by_value(x_clean + delta, *bounds)

    # ---------------------------------------------------------------- in-graph search

    def _single_run(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        state: SearchState,
        targeted: bool,
    ) -> SearchState:
        """One search of ``queries`` queries per example still worth attacking (keys [N, 2] of
        this restart)."""
        bounds = classifier.bounds
        shape = tuple(int(d) for d in x.shape[1:])
        index = tf.range(tf.shape(x)[0])
        if self.early_stop:
            index = tf.boolean_mask(index, ~state.success)
        x_clean, labels_now, keys_now = (tf.gather(t, index) for t in (x, labels, keys))

        def judge(candidate, labels_now):
            logits = classifier.logits(candidate)
            return (
                logits,
                self.objective(logits, labels_now, targeted),
                is_success(logits, labels_now, targeted),
            )

        def leave_if_broken(success, *tensors):
            return compact(~success, *tensors) if self.early_stop else list(tensors)

        def attack_active(state: SearchState) -> SearchState:
            x_now = self._start(x_clean, seeding.fold_in(keys_now, -1), eps, bounds)
            logits, objective, success = judge(x_now, labels_now)
            state = keep_best(count_step(state, index), index, x_now, logits, objective, success)
            active = leave_if_broken(
                success, index, x_clean, x_now, labels_now, keys_now, objective, success
            )

            def condition(query, active, state):
                return (query < self.queries - 1) & (tf.size(active[0]) > 0)

            def body(query, active, state):
                rows, x_clean, x_now, labels_now, keys_now, objective_now, success_now = active
                side = self._side(query, shape)
                query_keys = seeding.fold_in(keys_now, query)
                candidate = self._propose(x_clean, x_now, side, query_keys, eps, bounds)
                logits, objective, success = judge(candidate, labels_now)
                state = keep_best(
                    count_step(state, rows), rows, candidate, logits, objective, success
                )
                improved = (objective > objective_now) | (success & ~success_now)
                x_now = tf.where(broadcast_rows(improved, x_now), candidate, x_now)
                objective_now = tf.where(improved, objective, objective_now)
                success_now = tf.where(improved, success, success_now)
                active = leave_if_broken(
                    success_now, rows, x_clean, x_now, labels_now, keys_now, objective_now,
                    success_now,
                )  # fmt: skip
                return query + 1, active, state

            _, _, state = while_active(condition, body, (tf.constant(0), active, state))
            return state

        # Some kernels reject empty batches: nothing to attack, no forward pass.
        return tf.cond(tf.size(index) > 0, lambda: attack_active(state), lambda: state)

    def _search(self, classifier, x, labels, keys, eps, state, targeted) -> SearchState:
        if len(x.shape) != 4 or any(d is None for d in x.shape[1:]):
            raise InputError(f"Square needs images [N, H, W, C] of known size, got {x.shape}.")
        eps = tf.cast(eps, tf.float32)

        def one_run(restart: tf.Tensor, state: SearchState) -> SearchState:
            restart_keys = seeding.fold_in(keys, restart)
            return self._single_run(classifier, x, labels, restart_keys, eps, state, targeted)

        return for_each_run(self.restarts, one_run, state)
