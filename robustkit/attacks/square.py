"""A gradient-free random-search attack in the spirit of Square (Andriushchenko et al. 2020).

It needs only logits, never gradients, so it is blind to gradient masking: when it breaks
examples that gradient attacks could not, the gradients were lying. Each query changes the
perturbation inside one random square window and keeps the change if the margin objective
improved. The window's area shrinks on a fixed schedule from ``p_init`` of the image.

Linf: the window is set to ``±eps`` per channel, starting from random vertical stripes.
L2: the window gets a two-lobed bump and absorbs the perturbation of a second random window
and any unused budget, so the perturbation keeps L2 norm ``eps`` (before clipping to bounds).
This L2 variant simplifies the paper's (one norm per window instead of per channel).

The whole search on a batch runs in one graph with the loop inside; examples that are
adversarial leave the batch (early stopping) exactly as in :class:`~robustkit.attacks.PGD`,
whose batch driver, result type and seeding it shares.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.attacks.pgd import PGD, AttackTensors, SearchState, _is_success
from robustkit.errors import InputError
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.norms import Norm

# Fractions of the query budget (in 1/10000) after which the window area halves (paper, App. A).
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def window_fraction(query: int, queries: int, p_init: float) -> float:
    """The share of the image a window covers at 0-based ``query`` of ``queries`` (NumPy
    reference of the in-graph schedule)."""
    progress = int(query / queries * 10000)
    return p_init / 2 ** sum(progress > point for point in _HALVING_POINTS)


class Square(PGD):
    """Random search over square windows; needs logits only (no gradients).

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` is ignored).
        eps: radius of the ball, in pixel units of the classifier's bounds.
        queries: forward passes per example and restart (the initial draw included).
        p_init: share of the image the first windows cover (0 < p_init <= 1).
        restarts: independent searches; each example keeps its best.
        loss: the objective, "margin" (Carlini-Wagner, the paper's choice), "ce" or a callable
            ``(logits, labels) -> [N]``; negated for targeted attacks.
        early_stop: stop querying an example once it is adversarial.
        seed: seed of every random draw; the same seed gives the same bytes.

    ``AttackResult.steps`` and ``AttackTensors.steps`` count forward queries per example.
    """

    gradient_free = True

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        queries: int = 1000,
        p_init: float = 0.8,
        restarts: int = 1,
        loss: str | LossFunction = "margin",
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        if int(queries) < 1:
            raise InputError(f"queries must be >= 1, got {queries!r}.")
        if not 0 < float(p_init) <= 1:
            raise InputError(f"p_init must be in (0, 1], got {p_init!r}.")
        super().__init__(
            norm,
            eps,
            steps=int(queries),
            random_start=True,
            restarts=restarts,
            loss=loss,
            early_stop=early_stop,
            seed=seed,
        )
        self.queries = int(queries)
        self.p_init = float(p_init)

    @property
    def config(self) -> dict[str, Any]:
        """Every hyperparameter, JSON-able."""
        return {
            "attack": type(self).__name__,
            **self.norm.to_dict(),
            "queries": self.queries,
            "p_init": self.p_init,
            "restarts": self.restarts,
            "loss": getattr(self.loss, "__name__", self.loss),
            "early_stop": self.early_stop,
            "seed": self.seed,
        }

    # ---------------------------------------------------------------- proposals

    def _side(self, query: tf.Tensor, height: int, width: int) -> tf.Tensor:
        """Window side (pixels, int32 scalar) at 0-based ``query``."""
        progress = tf.cast(tf.cast(query, tf.float32) / self.queries * 10000.0, tf.int32)
        halvings = tf.reduce_sum(tf.cast(progress > tf.constant(_HALVING_POINTS), tf.float32))
        fraction = self.p_init / tf.pow(2.0, halvings)
        side = tf.cast(tf.round(tf.sqrt(fraction * height * width)), tf.int32)
        return tf.clip_by_value(side, 1, max(min(height, width) - 1, 1))

    @staticmethod
    def _window(shape: tf.Tensor, side: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """A random square window per example: mask [m, H, W, 1] and its top-left corner."""
        m, height, width = shape[0], shape[1], shape[2]
        seeds = tf.random.experimental.stateless_split(seed, 2)
        top = tf.random.stateless_uniform([m], seeds[0], 0, height - side + 1, tf.int32)
        left = tf.random.stateless_uniform([m], seeds[1], 0, width - side + 1, tf.int32)
        rows = tf.range(height)[None, :, None, None] - top[:, None, None, None]
        cols = tf.range(width)[None, None, :, None] - left[:, None, None, None]
        mask = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
        return mask, rows, cols

    @staticmethod
    def _signs(shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Random ±1 floats of ``shape``."""
        bits = tf.random.stateless_uniform(shape, seed, 0, 2, tf.int32)
        return tf.cast(2 * bits - 1, tf.float32)

    def _initial_delta(self, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Vertical stripes of random sign per column and channel, on the sphere of radius eps."""
        stripes = self._signs(tf.stack([shape[0], 1, shape[2], shape[3]]), seed)
        stripes = tf.broadcast_to(stripes, shape)
        if self.norm.name == "linf":
            return self.norm.eps * stripes
        dimension = tf.cast(tf.reduce_prod(shape[1:]), tf.float32)
        return self.norm.eps * stripes / tf.sqrt(dimension)

    def _propose_linf(self, delta: tf.Tensor, side: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Set one window of ``delta`` to ±eps per channel (flipped if it already held those)."""
        shape = tf.shape(delta)
        seeds = tf.random.experimental.stateless_split(seed, 2)
        mask, _, _ = self._window(shape, side, seeds[0])
        values = self.norm.eps * self._signs(tf.stack([shape[0], 1, 1, shape[3]]), seeds[1])
        unchanged = tf.reduce_all(
            tf.abs(tf.where(mask, values - delta, 0.0)) < 1e-7, axis=[1, 2, 3], keepdims=True
        )
        return tf.where(mask, tf.where(unchanged, -values, values), delta)

    def _propose_l2(self, delta: tf.Tensor, side: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Move the mass of a second window (and unused budget) into a new bump in the first."""
        shape = tf.shape(delta)
        seeds = tf.random.experimental.stateless_split(seed, 4)
        first, rows, cols = self._window(shape, side, seeds[0])
        second, _, _ = self._window(shape, side, seeds[1])
        second = second & ~first
        transpose = tf.random.stateless_uniform([shape[0], 1, 1, 1], seeds[2]) < 0.5
        rows, cols = tf.where(transpose, cols, rows), tf.where(transpose, rows, cols)
        bump = self._two_lobes(rows, cols, side) * self._signs(
            tf.stack([shape[0], 1, 1, shape[3]]), seeds[3]
        )

        def norm(values: tf.Tensor) -> tf.Tensor:
            return tf.sqrt(tf.reduce_sum(tf.square(values), axis=[1, 2, 3], keepdims=True))

        old = tf.where(first, delta, 0.0)
        direction = tf.where(first, bump + old / tf.maximum(norm(old), _TINY), 0.0)
        slack = tf.maximum(self.norm.eps**2 - tf.square(norm(delta)), 0.0)
        moved = tf.square(norm(tf.where(first | second, delta, 0.0)))
        scale = tf.sqrt(slack + moved) / tf.maximum(norm(direction), _TINY)
        return tf.where(first, direction * scale, tf.where(second, 0.0, delta))

    @staticmethod
    def _two_lobes(rows: tf.Tensor, cols: tf.Tensor, side: tf.Tensor) -> tf.Tensor:
        """A window-sized pattern [m, H, W, 1]: a positive peaked lobe on the first half of the
        rows, a negative one on the second, each falling off as 1 / (1 + ring index)."""
        split = side // 2
        in_first = rows < split
        lobe_top = tf.where(in_first, 0, split)
        lobe_rows = tf.where(in_first, split, side - split)
        center_row = tf.cast(lobe_top, tf.float32) + (tf.cast(lobe_rows, tf.float32) - 1) / 2
        center_col = (tf.cast(side, tf.float32) - 1) / 2
        ring = tf.floor(
            tf.maximum(
                tf.abs(tf.cast(rows, tf.float32) - center_row),
                tf.abs(tf.cast(cols, tf.float32) - center_col),
            )
        )
        inside = (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
        sign = tf.where(in_first, 1.0, -1.0)
        return tf.where(inside, sign / (1.0 + ring), 0.0)

    # ---------------------------------------------------------------- in-graph search

    def _objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        value = self._loss_function(logits, labels)
        return -value if targeted else value

    def _random_search(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor,
        state: SearchState,
        targeted: bool,
    ) -> SearchState:
        """One restart: ``queries`` forward passes per example still worth attacking."""
        low, high = classifier.bounds
        height, width = classifier.input_shape[:2]
        propose = self._propose_linf if self.norm.name == "linf" else self._propose_l2

        def judge(state, index, x_now, logits, objective, success):
            best_success = tf.gather(state.success, index)
            best_objective = tf.gather(state.loss, index)
            better = (success & ~best_success) | (
                (success == best_success) & (objective > best_objective)
            )
            where = tf.boolean_mask(index, better)[:, None]

            def scatter(old: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
                return tf.tensor_scatter_nd_update(old, where, tf.boolean_mask(new, better))

            return SearchState(
                x=scatter(state.x, x_now),
                logits=scatter(state.logits, logits),
                loss=scatter(state.loss, objective),
                success=scatter(state.success, success),
                steps=tf.tensor_scatter_nd_add(state.steps, index[:, None], tf.ones_like(index)),
            )

        def keep(active, *tensors):
            if not self.early_stop:
                return list(tensors)
            return [tf.boolean_mask(t, active) for t in tensors]

        init_seed, loop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        index = tf.range(tf.shape(x)[0])
        if self.early_stop:
            index = tf.boolean_mask(index, ~state.success)
        x_clean, labels_now = tf.gather(x, index), tf.gather(labels, index)
        x_now = tf.clip_by_value(
            x_clean + self._initial_delta(tf.shape(x_clean), init_seed), low, high
        )

        def first_query(state):
            logits = classifier.logits(x_now)
            objective = self._objective(logits, labels_now, targeted)
            success = _is_success(logits, labels_now, targeted)
            state = judge(state, index, x_now, logits, objective, success)
            return state, objective, success

        state, objective_now, success_now = tf.cond(
            tf.size(index) > 0,
            lambda: first_query(state),
            lambda: (state, tf.zeros([0]), tf.zeros([0], tf.bool)),
        )
        index, x_clean, x_now, labels_now, objective_now, success_now = keep(
            ~success_now, index, x_clean, x_now, labels_now, objective_now, success_now
        )

        def condition(query, index, x_clean, x_now, labels_now, objective_now, state):
            return (query < self.queries - 1) & (tf.size(index) > 0)

        def body(query, index, x_clean, x_now, labels_now, objective_now, state):
            side = self._side(query, height, width)
            query_seed = tf.random.experimental.stateless_fold_in(loop_seed, query)
            delta = propose(x_now - x_clean, side, query_seed)
            candidate = tf.clip_by_value(x_clean + delta, low, high)
            logits = classifier.logits(candidate)
            objective = self._objective(logits, labels_now, targeted)
            success = _is_success(logits, labels_now, targeted)
            improved = (objective > objective_now) | success
            state = judge(state, index, candidate, logits, objective, success)
            x_now = tf.where(improved[:, None, None, None], candidate, x_now)
            objective_now = tf.where(improved, objective, objective_now)
            index, x_clean, x_now, labels_now, objective_now = keep(
                ~success, index, x_clean, x_now, labels_now, objective_now
            )
            return query + 1, index, x_clean, x_now, labels_now, objective_now, state

        image_shape = tf.TensorShape([None, *x.shape[1:]])
        vector = tf.TensorShape([None])
        state_shapes = SearchState(
            x=image_shape,
            logits=tf.TensorShape([None, None]),
            loss=vector,
            success=vector,
            steps=vector,
        )
        *_, state = tf.while_loop(
            condition,
            body,
            (tf.constant(0), index, x_clean, x_now, labels_now, objective_now, state),
            shape_invariants=(
                tf.TensorShape([]),
                vector,
                image_shape,
                image_shape,
                vector,
                vector,
                state_shapes,
            ),
            parallel_iterations=1,
        )
        return state

    def run(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor,
        *,
        targeted: bool = False,
    ) -> AttackTensors:
        """The attack on one batch, as graph-friendly tensor code (call it inside tf.function).

        Args:
            x: clean images [N, H, W, C] in bounds; labels: int32 [N] true labels, or target
            classes when ``targeted``; seed: int32 [2] stateless seed.

        Returns:
            AttackTensors whose ``steps`` count forward queries; ``success_unquantized`` equals
            ``success`` (Square does not quantize).
        """
        n = tf.shape(x)[0]
        state = SearchState(
            x=x,
            logits=tf.zeros((n, classifier.num_classes)),
            loss=tf.fill((n,), -np.inf),
            success=tf.zeros((n,), tf.bool),
            steps=tf.zeros((n,), tf.int32),
        )
        for restart in range(self.restarts):
            restart_seed = tf.random.experimental.stateless_fold_in(seed, restart)
            state = self._random_search(classifier, x, labels, restart_seed, state, targeted)
        return AttackTensors(state.x, state.logits, state.success, state.success, state.steps)
