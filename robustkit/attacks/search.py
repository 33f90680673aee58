"""The in-graph search every step rule shares: the per-example best-so-far state, its update
(adversarial first, then the highest objective), early-stop compaction and the loops over
shrinking batches, restarts and target passes, and APGD's and FAB's random start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow as tf

from robustkit import seeding
from robustkit.norms import l2_distance, linf_distance


class SearchState(NamedTuple):
    """Per-example best found so far over all iterates of all restarts ([N, ...] each).

    x: best images; logits: their logits; loss: their objective (the value the attack ascends);
    success: adversarial; steps: evaluations (gradient steps or queries) spent.
    """

    x: tf.Tensor
    logits: tf.Tensor
    loss: tf.Tensor
    success: tf.Tensor
    steps: tf.Tensor


class AttackTensors(NamedTuple):
    """In-graph result of :meth:`Attack.run`: adversarial images, their logits, per-example
    success (after quantization when quantized), success before quantization, and evaluations
    spent per example."""

    x_adv: tf.Tensor
    logits: tf.Tensor
    success: tf.Tensor
    success_unquantized: tf.Tensor
    steps: tf.Tensor


def is_success(logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
    """bool [N]: classified as the target (targeted) or away from the label (untargeted)."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.equal(predicted, labels) if targeted else tf.not_equal(predicted, labels)


def keep_best(
    state: SearchState,
    index: tf.Tensor | None,
    x_now: tf.Tensor,
    logits: tf.Tensor,
    objective: tf.Tensor,
    success: tf.Tensor,
) -> SearchState:
    """``state`` with the rows ``index`` [m] replaced where the new iterate x_now [m, ...] is
    better: adversarial where the best was not, or as adversarial and a higher objective.

    ``index`` None means every row in order (m = N): a dense select, no gather or scatter, for
    attacks that run at full budget."""
    best_success = state.success if index is None else tf.gather(state.success, index)
    best_loss = state.loss if index is None else tf.gather(state.loss, index)
    better = (success & ~best_success) | ((success == best_success) & (objective > best_loss))
    if index is None:

        def update(old: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
            return tf.where(broadcast_rows(better, new), new, old)

    else:
        where = tf.boolean_mask(index, better)[:, None]

        def update(old: tf.Tensor, new: tf.Tensor) -> tf.Tensor:
            return tf.tensor_scatter_nd_update(old, where, tf.boolean_mask(new, better))

    return SearchState(
        x=update(state.x, x_now),
        logits=update(state.logits, logits),
        loss=update(state.loss, objective),
        success=update(state.success, success),
        steps=state.steps,
    )


def count_step(state: SearchState, index: tf.Tensor | None) -> SearchState:
    """One more evaluation spent on each example in ``index`` (None: on every example)."""
    if index is None:
        return state._replace(steps=state.steps + 1)
    ones = tf.ones_like(index)
    return state._replace(steps=tf.tensor_scatter_nd_add(state.steps, index[:, None], ones))


def compact(active: tf.Tensor, *tensors: tf.Tensor) -> list[tf.Tensor]:
    """The rows of each [m, ...] tensor where ``active`` [m] holds (early-stop compaction)."""
    return [tf.boolean_mask(t, active) for t in tensors]


def batch_invariants(structure: Any) -> Any:
    """``tf.while_loop`` shape invariants for loop variables whose first axis shrinks: every
    tensor of rank >= 1 gets a free first dimension (scalars keep their shape)."""

    def free_first(t: tf.Tensor) -> tf.TensorShape:
        shape = t.shape
        return shape if shape.rank == 0 else tf.TensorShape([None, *shape[1:]])

    return tf.nest.map_structure(free_first, structure)


def while_active(condition: Any, body: Any, loop_vars: Any) -> Any:
    """``tf.while_loop`` over loop variables whose batch axis shrinks (sequential iterations)."""
    return tf.while_loop(
        condition,
        body,
        loop_vars,
        shape_invariants=batch_invariants(loop_vars),
        parallel_iterations=1,  # iterations are sequential; overlap only contends for cores
    )


def for_each_run(
    runs: int, run: Callable[[tf.Tensor, SearchState], SearchState], state: SearchState
) -> SearchState:
    """``state`` after ``run(r, state)`` for r = 0 .. runs - 1 (restarts, target passes), as one
    in-graph loop: the run is traced once however many there are."""
    _, state = tf.while_loop(
        lambda r, state: r < runs,
        lambda r, state: (r + 1, run(r, state)),
        (tf.constant(0), state),
        parallel_iterations=1,
    )
    return state


def broadcast_rows(values: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """[m] values reshaped to broadcast against ``like`` [m, ...]."""
    ones = tf.ones((tf.rank(like) - 1,), tf.int32)
    return tf.reshape(values, tf.concat([tf.shape(values), ones], axis=0))


def normalised_start(
    norm_name: str,
    x: tf.Tensor,
    keys: tf.Tensor,
    radius: tf.Tensor,
    bounds: tuple[float, float],
) -> tf.Tensor:
    """x + radius * t / ||t|| clipped to the bounds, with t uniform in [-1, 1] normalised by its
    max (Linf) or standard normal (L2, a point on the sphere): the random starts of APGD and
    FAB (Croce & Hein 2020). Row i draws from keys[i] only."""
    shape = tf.shape(x)[1:]
    if norm_name == "linf":
        t = seeding.uniform(keys, shape, -1.0, 1.0)
        scale = linf_distance(t)
    else:
        t = seeding.normal(keys, shape)
        scale = l2_distance(t)
    return tf.clip_by_value(x + radius * t / broadcast_rows(scale + 1e-12, t), *bounds)
