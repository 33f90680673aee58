"""Projected gradient descent (Madry et al. 2018) and FGSM as its one-step case.

A whole attack on a batch runs as one ``tf.function`` with its loops in the graph. With early
stopping, examples that are already adversarial leave the batch between steps (the batch is
compacted in-graph), so they stop costing forward and backward passes.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from robustkit.attacks.result import AttackResult
from robustkit.errors import InputError
from robustkit.gradients import input_gradients
from robustkit.losses import LossFunction, get_loss
from robustkit.models import Classifier
from robustkit.norms import Norm, l2_distance, linf_distance, make_norm

TARGET_MODES = ("least-likely", "random")


class SearchState(NamedTuple):
    """Per-example best found so far over all iterates of all restarts ([N, ...] each)."""

    x: tf.Tensor
    logits: tf.Tensor
    loss: tf.Tensor
    success: tf.Tensor
    steps: tf.Tensor


class AttackTensors(NamedTuple):
    """In-graph result of :meth:`PGD.run`: adversarial images, their logits, per-example success
    (after quantization when quantized), success before quantization, and gradient evaluations."""

    x_adv: tf.Tensor
    logits: tf.Tensor
    success: tf.Tensor
    success_unquantized: tf.Tensor
    steps: tf.Tensor


def _is_success(logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.equal(predicted, labels) if targeted else tf.not_equal(predicted, labels)


class PGD:
    """Projected gradient descent in a Linf or L2 ball.

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` is ignored).
        eps: radius of the ball, in pixel units of the classifier's bounds (e.g. ``8/255``).
        steps: gradient steps per restart.
        step_size: absolute step size (pixel units); default ``2.5 * eps / steps``.
        rel_step_size: step size as a fraction of eps (exclusive with ``step_size``).
        random_start: start from a uniform draw in the ball instead of the clean image.
        restarts: independent runs; each example keeps its best (successful first, then the
            highest loss).
        loss: "ce", "margin" (Carlini-Wagner) or a callable ``(logits, labels) -> [N]``.
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
        self.norm = make_norm(norm, eps)
        if int(steps) < 1:
            raise InputError(f"steps must be >= 1, got {steps!r}.")
        if int(restarts) < 1:
            raise InputError(f"restarts must be >= 1, got {restarts!r}.")
        if step_size is not None and rel_step_size is not None:
            raise InputError("Give step_size or rel_step_size, not both.")
        if rel_step_size is not None:
            step_size = float(rel_step_size) * self.norm.eps
        if step_size is None:
            step_size = 2.5 * self.norm.eps / int(steps)
        if not float(step_size) >= 0:
            raise InputError(f"step size must be >= 0, got {step_size!r}.")
        if quantize is not None and int(quantize) < 1:
            raise InputError(f"quantize must be a number of grid steps >= 1, got {quantize!r}.")
        if int(grid_steps) < 0:
            raise InputError(f"grid_steps must be >= 0, got {grid_steps!r}.")
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = loss
        self._loss_function = get_loss(loss)
        self.early_stop = bool(early_stop)
        self.quantize = None if quantize is None else int(quantize)
        self.grid_steps = int(grid_steps) if quantize is not None else 0
        self.seed = int(seed)
        self._compiled: weakref.WeakKeyDictionary[Classifier, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def config(self) -> dict[str, Any]:
        """Every hyperparameter, JSON-able."""
        return {
            "attack": type(self).__name__,
            **self.norm.to_dict(),
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "loss": getattr(self.loss, "__name__", self.loss),
            "early_stop": self.early_stop,
            "quantize": self.quantize,
            "grid_steps": self.grid_steps,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "attack")
        return f"{type(self).__name__}({options})"

    # ---------------------------------------------------------------- in-graph search

    def _search(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        start: tf.Tensor,
        state: SearchState,
        *,
        steps: int,
        step_size: float,
        targeted: bool,
        spacing: float | None,
    ) -> SearchState:
        """Run ``steps`` gradient steps from ``start`` on the examples still worth attacking.

        Each iterate (the start included, the last one by a forward pass only) is judged and
        kept in ``state`` where it beats the example's best. With early stopping, adversarial
        examples leave the active set, which shrinks the batch.
        """
        low, high = classifier.bounds
        norm = self.norm

        def judge(state: SearchState, index: tf.Tensor, x_now, logits, loss, labels_now):
            success = _is_success(logits, labels_now, targeted)
            best_success = tf.gather(state.success, index)
            best_loss = tf.gather(state.loss, index)
            better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
            where = tf.boolean_mask(index, better)[:, None]
            state = SearchState(
                x=tf.tensor_scatter_nd_update(state.x, where, tf.boolean_mask(x_now, better)),
                logits=tf.tensor_scatter_nd_update(
                    state.logits, where, tf.boolean_mask(logits, better)
                ),
                loss=tf.tensor_scatter_nd_update(state.loss, where, tf.boolean_mask(loss, better)),
                success=tf.tensor_scatter_nd_update(
                    state.success, where, tf.boolean_mask(success, better)
                ),
                steps=state.steps,
            )
            return state, success

        def step(x_clean, x_now, gradient):
            moved = x_now + step_size * norm.step_direction(gradient)
            delta = norm.project(moved - x_clean)
            if spacing is not None:
                delta = norm.snap_to_grid(delta, spacing)
            return tf.clip_by_value(x_clean + delta, low, high)

        def keep(active_mask, *tensors):
            return [tf.boolean_mask(t, active_mask) for t in tensors]

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
            state = state._replace(
                steps=tf.tensor_scatter_nd_add(state.steps, index[:, None], tf.ones_like(index))
            )
            state, success = judge(state, index, x_now, logits, loss, labels_now)
            if self.early_stop:
                index, x_clean, x_now, labels_now, gradient = keep(
                    ~success, index, x_clean, x_now, labels_now, gradient
                )
            return k + 1, index, x_clean, step(x_clean, x_now, gradient), labels_now, state

        image_shape = tf.TensorShape([None, *x.shape[1:]])
        state_shapes = SearchState(
            x=image_shape,
            logits=tf.TensorShape([None, None]),
            loss=tf.TensorShape([None]),
            success=tf.TensorShape([None]),
            steps=tf.TensorShape([None]),
        )
        _, index, _, x_now, labels_now, state = tf.while_loop(
            condition,
            body,
            (tf.constant(0), index, x_clean, x_now, labels_now, state),
            shape_invariants=(
                tf.TensorShape([]),
                tf.TensorShape([None]),
                image_shape,
                image_shape,
                tf.TensorShape([None]),
                state_shapes,
            ),
            parallel_iterations=1,  # iterations are sequential; overlap only contends for cores
        )

        def judge_last_iterate() -> SearchState:
            logits = classifier.logits(x_now)
            loss = self._loss_function(logits, labels_now)
            return judge(state, index, x_now, logits, -loss if targeted else loss, labels_now)[0]

        # Some kernels reject empty batches, so an empty active set skips the forward pass.
        return tf.cond(tf.size(index) > 0, judge_last_iterate, lambda: state)

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
        """
        low, high = classifier.bounds
        n = tf.shape(x)[0]
        state = SearchState(
            x=x,
            logits=tf.zeros((n, classifier.num_classes)),
            loss=tf.fill((n,), -np.inf),
            success=tf.zeros((n,), tf.bool),
            steps=tf.zeros((n,), tf.int32),
        )
        for restart in range(self.restarts):
            start = x
            if self.random_start:
                restart_seed = tf.random.experimental.stateless_fold_in(seed, restart)
                delta = self.norm.random_start(tf.shape(x), restart_seed)
                start = tf.clip_by_value(x + delta, low, high)
            state = self._search(
                classifier,
                x,
                labels,
                start,
                state,
                steps=self.steps,
                step_size=self.step_size,
                targeted=targeted,
                spacing=None,
            )
        success_unquantized = state.success
        if self.quantize is not None:
            spacing = (high - low) / self.quantize
            snapped = tf.clip_by_value(x + self.norm.snap_to_grid(state.x - x, spacing), low, high)
            fresh = state._replace(
                loss=tf.fill((n,), -np.inf), success=tf.zeros((n,), tf.bool), x=snapped
            )
            grid_step = max(self.step_size, spacing) if self.norm.name == "l2" else spacing
            state = self._search(
                classifier,
                x,
                labels,
                snapped,
                fresh,
                steps=self.grid_steps,
                step_size=grid_step,
                targeted=targeted,
                spacing=spacing,
            )
        return AttackTensors(state.x, state.logits, state.success, success_unquantized, state.steps)

    # ---------------------------------------------------------------- batch driver

    def _batch_function(self, classifier: Classifier, target_mode: str | None) -> Any:
        """The compiled whole-batch attack for this classifier and target mode (cached)."""
        functions = self._compiled.setdefault(classifier, {})
        if target_mode in functions:
            return functions[target_mode]
        num_classes = classifier.num_classes
        targeted = target_mode is not None

        def attack_batch(x, labels, targets, seed):
            clean_logits = classifier.logits(x)
            clean_pred = tf.argmax(clean_logits, axis=-1, output_type=tf.int32)
            labels = tf.where(labels < 0, clean_pred, labels)
            if target_mode == "least-likely":
                targets = tf.argmin(clean_logits, axis=-1, output_type=tf.int32)
            elif target_mode == "random":
                offset = tf.random.stateless_uniform(
                    tf.shape(labels),
                    tf.random.experimental.stateless_fold_in(seed, -1),
                    minval=1,
                    maxval=num_classes,
                    dtype=tf.int32,
                )
                targets = (labels + offset) % num_classes
            result = self.run(
                classifier, x, targets if targeted else labels, seed, targeted=targeted
            )
            return clean_logits, labels, targets, result

        signature = [
            tf.TensorSpec((None, *classifier.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((2,), tf.int32),
        ]
        functions[target_mode] = tf.function(attack_batch, input_signature=signature)
        return functions[target_mode]

    def __call__(
        self,
        classifier: Classifier,
        x: Any,
        y: Any = None,
        *,
        target: Any = None,
        batch_size: int = 256,
        first_batch: int = 0,
    ) -> AttackResult:
        """Attack images x [N, H, W, C] (float32 in the classifier's bounds).

        Args:
            y: true labels [N]. When None the model's own clean predictions are used as labels
                (so true labels never leak into the attack), and ``labels_from_model`` is set.
            target: makes the attack targeted: class indices [N], one int for all, or
                "least-likely" / "random" (a uniformly drawn class other than the label).
            batch_size: images per compiled batch; memory is bounded by it.
            first_batch: index of the first batch in a longer stream. Batch i draws its random
                numbers from the seed pair (seed, first_batch + i), so a caller streaming
                batches gives each its own draws and a resumed stream repeats them exactly.
        """
        if not isinstance(classifier, Classifier):
            raise InputError("Pass a robustkit Classifier: wrap your model as Classifier(model).")
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}.")
        x = classifier.validate_images(x)
        n = int(x.shape[0])
        labels = tf.fill((n,), -1) if y is None else classifier.validate_labels(y, n, name="y")
        target_mode, targets = self._resolve_target(classifier, target, n)
        function = self._batch_function(classifier, target_mode)
        parts = []
        for batch, begin in enumerate(range(0, n, batch_size)):
            end = min(begin + batch_size, n)
            seed = tf.constant([self.seed, first_batch + batch], tf.int32)
            clean_logits, batch_labels, batch_targets, result = function(
                x[begin:end], labels[begin:end], targets[begin:end], seed
            )
            parts.append(
                self._to_result(
                    x[begin:end], clean_logits, batch_labels, batch_targets, result, target_mode
                )
            )
        if not parts:
            raise InputError("x holds no images.")
        joined = AttackResult.concatenate(parts)
        joined.labels_from_model = y is None
        joined.config = self.config
        return joined

    attack = __call__

    @staticmethod
    def _resolve_target(
        classifier: Classifier, target: Any, n: int
    ) -> tuple[str | None, tf.Tensor]:
        if target is None:
            return None, tf.zeros((n,), tf.int32)
        if isinstance(target, str):
            if target not in TARGET_MODES:
                raise InputError(
                    f"Unknown target {target!r}; give class indices or one of {TARGET_MODES}."
                )
            return target, tf.zeros((n,), tf.int32)
        values = np.asarray(target)
        if values.ndim == 0:
            values = np.full((n,), int(values))
        return "given", classifier.validate_labels(values, n, name="target")

    def _to_result(
        self,
        x: tf.Tensor,
        clean_logits: tf.Tensor,
        labels: tf.Tensor,
        targets: tf.Tensor,
        result: AttackTensors,
        target_mode: str | None,
    ) -> AttackResult:
        delta = result.x_adv - x
        clean_probabilities = tf.nn.softmax(clean_logits)
        adv_probabilities = tf.nn.softmax(result.logits)
        return AttackResult(
            x_adv=result.x_adv.numpy(),
            success=result.success.numpy(),
            labels=labels.numpy().astype(np.int64),
            target=None if target_mode is None else targets.numpy().astype(np.int64),
            clean_pred=np.argmax(clean_probabilities, axis=-1),
            adv_pred=np.argmax(adv_probabilities, axis=-1),
            clean_confidence=np.max(clean_probabilities, axis=-1),
            adv_confidence=np.max(adv_probabilities, axis=-1),
            linf=linf_distance(delta).numpy(),
            l2=l2_distance(delta).numpy(),
            steps=result.steps.numpy().astype(np.int64),
            success_unquantized=None
            if self.quantize is None
            else result.success_unquantized.numpy(),
        )


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
        random_start: bool = False,
        loss: str | LossFunction = "ce",
        early_stop: bool = True,
        quantize: int | None = None,
        grid_steps: int = 0,
        seed: int = 0,
    ) -> None:
        resolved = make_norm(norm, eps)
        if step_size is None:
            step_size = (1.25 if random_start else 1.0) * resolved.eps
        super().__init__(
            resolved,
            steps=1,
            step_size=step_size,
            random_start=random_start,
            restarts=1,
            loss=loss,
            early_stop=early_stop,
            quantize=quantize,
            grid_steps=grid_steps,
            seed=seed,
        )
