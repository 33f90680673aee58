"""The one attack core: `Attack`, its batch driver and its cache of compiled functions.

Every attack (FGSM, PGD, APGD, FAB, Square) is an :class:`Attack` that writes only its own step
rule (:meth:`Attack._search`). The core gives each of them the same contract:

- ``run(classifier, x, labels, seed, *, eps, targeted)`` is graph code: ``eps`` is a tensor, so
  one compiled function serves every radius (an evaluation's eps sweep, a training eps ramp).
- Per-example seeding: example i draws its random numbers from its own key
  (:mod:`robustkit.seeding`, ``hash(seed, example index)``), so the adversarial found for an
  example does not depend on the batch size, the chunking, which other examples are still
  attacked, or the entry point (``attack(...)``, ``evaluate``, the trainer).
- With early stopping the clean point is judged first, and examples leave the batch as soon as
  they are adversarial (in-graph compaction, :func:`~robustkit.attacks.search.compact`): they
  stop costing passes.
- Each example keeps its best iterate: adversarial first, then the highest objective
  (:mod:`robustkit.attacks.search` holds that state and the loops the step rules share).
"""

from __future__ import annotations

import weakref
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from robustkit import seeding
from robustkit.attacks.result import AttackResult
from robustkit.attacks.search import AttackTensors, SearchState, is_success, keep_best
from robustkit.errors import InputError
from robustkit.models import Classifier, check_classifier
from robustkit.norms import Norm, l2_distance, linf_distance, make_norm
from robustkit.tracing import compile_with_signature

TARGET_MODES = ("least-likely", "random")


class Attack:
    """Base of every attack: one in-graph ``run``, one batch driver, one compiled-function cache.

    Args:
        norm: "linf", "l2" or a :class:`~robustkit.norms.Norm` (then ``eps`` must be None).
        eps: default radius in pixel units of the classifier's bounds (``run`` may override it).
        early_stop: stop spending evaluations on an example once it is adversarial (evaluation
            mode); the clean point is judged first. Off, every example gets the full budget
            (training mode). Success is the same either way.
        seed: seed of every random draw; the same seed gives the same bytes.

    Subclasses set ``gradient_free`` and implement :meth:`_search` and :meth:`_options`.
    """

    gradient_free: ClassVar[bool] = False
    targetable: ClassVar[bool] = True  # runs targeted at given classes (else: picks its own)

    def __init__(
        self,
        norm: str | Norm = "linf",
        eps: float | None = None,
        *,
        early_stop: bool = True,
        seed: int = 0,
    ) -> None:
        if isinstance(norm, Norm) and eps is not None and float(eps) != norm.eps:
            raise InputError(
                f"Got both {norm!r} and eps={eps!r}; give the radius once (in the Norm or as eps)."
            )
        self.norm = make_norm(norm, eps)
        self.early_stop = bool(early_stop)
        self.seed = int(seed)
        self._compiled: weakref.WeakKeyDictionary[Classifier, dict[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    # ---------------------------------------------------------------- description

    def _options(self) -> dict[str, Any]:
        """The attack's own hyperparameters, JSON-able."""
        return {}

    @property
    def config(self) -> dict[str, Any]:
        """Every hyperparameter, JSON-able."""
        return {
            "attack": type(self).__name__,
            **self.norm.to_dict(),
            **self._options(),
            "early_stop": self.early_stop,
            "seed": self.seed,
        }

    def budget(self, num_classes: int) -> int:
        """Evaluations (gradient steps or queries) one example costs when it never stops early,
        for a model with ``num_classes`` classes."""
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "attack")
        return f"{type(self).__name__}({options})"

    # ---------------------------------------------------------------- in-graph attack

    def _search(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        state: SearchState,
        targeted: bool,
    ) -> SearchState:
        """The step rule: improve ``state`` on x [N, ...] (keys [N, 2], eps a scalar tensor).

        With early stopping, examples whose ``state.success`` is already set need no work."""
        raise NotImplementedError

    def _finish(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        keys: tf.Tensor,
        eps: tf.Tensor,
        state: SearchState,
        targeted: bool,
    ) -> AttackTensors:
        """The result from the final search state (quantizing attacks override this)."""
        del classifier, x, labels, keys, eps, targeted
        return AttackTensors(state.x, state.logits, state.success, state.success, state.steps)

    def objective(self, logits: tf.Tensor, labels: tf.Tensor, targeted: bool) -> tf.Tensor:
        """The per-example value [N] the attack ascends (its loss, negated when targeted)."""
        raise NotImplementedError

    def run(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        seed: tf.Tensor,
        *,
        eps: float | tf.Tensor | None = None,
        targeted: bool = False,
    ) -> AttackTensors:
        """The attack on one batch, as graph-friendly tensor code (call it inside tf.function).

        Args:
            x: clean images [N, H, W, C] in bounds.
            labels: int32 [N] true labels, or target classes when ``targeted``.
            seed: int32 [2] seed (example i of this batch gets the key of index i) or
                per-example keys [N, 2] from :func:`robustkit.seeding.example_keys`.
            eps: radius (a float or scalar tensor); default the norm's own eps.
        """
        x = tf.convert_to_tensor(x, tf.float32)
        labels = tf.cast(labels, tf.int32)
        n = tf.shape(x)[0]
        keys = seeding.as_keys(seed, n)
        eps = tf.cast(self.norm.eps if eps is None else eps, tf.float32)
        state = SearchState(
            x=x,
            logits=tf.zeros((n, classifier.num_classes)),
            loss=tf.fill((n,), -np.inf),
            success=tf.zeros((n,), tf.bool),
            steps=tf.zeros((n,), tf.int32),
        )
        if self.early_stop:
            state = self._judge_clean(classifier, x, labels, state, targeted)
        state = self._search(classifier, x, labels, keys, eps, state, targeted)
        return self._finish(classifier, x, labels, keys, eps, state, targeted)

    def _judge_clean(
        self,
        classifier: Classifier,
        x: tf.Tensor,
        labels: tf.Tensor,
        state: SearchState,
        targeted: bool,
    ) -> SearchState:
        """The clean images judged as the first candidate (one forward pass, not counted)."""

        def judge() -> SearchState:
            logits = classifier.logits(x)
            success = is_success(logits, labels, targeted)
            objective = self.objective(logits, labels, targeted)
            return keep_best(state, None, x, logits, objective, success)

        return tf.cond(tf.shape(x)[0] > 0, judge, lambda: state)

    # ---------------------------------------------------------------- batch driver

    def compiled(self, classifier: Classifier, target_mode: str | None = None) -> Any:
        """The compiled whole-batch attack ``(x, labels, targets, keys, eps)`` for this classifier
        and target mode (None, "given", "least-likely", "random"); traced once, cached."""
        if target_mode is not None and not self.targetable:
            raise InputError(
                f"{type(self).__name__} is untargeted: it picks its own target classes (or "
                "none) and succeeds when the prediction leaves the label. Use PGD for an "
                "attack targeted at given classes."
            )
        functions = self._compiled.setdefault(classifier, {})
        if target_mode in functions:
            return functions[target_mode]
        num_classes = classifier.num_classes
        targeted = target_mode is not None

        def attack_batch(x, labels, targets, keys, eps):
            clean_logits = classifier.logits(x)
            clean_pred = tf.argmax(clean_logits, axis=-1, output_type=tf.int32)
            labels = tf.where(labels < 0, clean_pred, labels)
            if target_mode == "least-likely":
                targets = tf.argmin(clean_logits, axis=-1, output_type=tf.int32)
            elif target_mode == "random":
                offset = 1 + seeding.integers(seeding.fold_in(keys, -1), num_classes - 1)
                targets = (labels + offset) % num_classes
            result = self.run(
                classifier, x, targets if targeted else labels, keys, eps=eps, targeted=targeted
            )
            return clean_logits, labels, targets, result

        signature = [
            tf.TensorSpec((None, *classifier.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None, 2), tf.int32),
            tf.TensorSpec((), tf.float32),
        ]
        functions[target_mode] = compile_with_signature(attack_batch, signature)
        return functions[target_mode]

    def __call__(
        self,
        classifier: Classifier,
        x: Any,
        y: Any = None,
        *,
        target: Any = None,
        eps: float | None = None,
        batch_size: int = 256,
        first_index: int = 0,
    ) -> AttackResult:
        """Attack images x [N, H, W, C] (float32 in the classifier's bounds).

        Args:
            y: true labels [N]. When None the model's own clean predictions are used as labels
                (so true labels never leak into the attack), and ``labels_from_model`` is set.
            target: makes the attack targeted: class indices [N], one int for all, or
                "least-likely" / "random" (a uniformly drawn class other than the label).
            eps: radius for this call; default the norm's eps.
            batch_size: images per compiled batch; memory is bounded by it.
            first_index: index of x[0] in a longer stream. Example i draws its random numbers
                from the key of (seed, first_index + i), so streamed parts of a data set give
                the same bytes as one call, whatever the batch size.
        """
        check_classifier(classifier)
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}.")
        if int(first_index) < 0:
            raise InputError(f"first_index must be >= 0, got {first_index!r}.")
        radius = self.norm.eps if eps is None else make_norm(self.norm.name, eps).eps
        x = classifier.validate_images(x)
        n = int(x.shape[0])
        if n == 0:
            raise InputError("x holds no images.")
        labels = tf.fill((n,), -1) if y is None else classifier.validate_labels(y, n, name="y")
        target_mode, targets = self._resolve_target(classifier, target, n)
        function = self.compiled(classifier, target_mode)
        keys = seeding.example_keys(
            tf.constant([self.seed, 0], tf.int32), tf.range(first_index, first_index + n)
        )
        parts = []
        for begin in range(0, n, batch_size):
            end = min(begin + batch_size, n)
            clean_logits, batch_labels, batch_targets, result = function(
                x[begin:end],
                labels[begin:end],
                targets[begin:end],
                keys[begin:end],
                tf.constant(radius, tf.float32),
            )
            parts.append(
                self._to_result(
                    x[begin:end], clean_logits, batch_labels, batch_targets, result, target_mode
                )
            )
        joined = AttackResult.concatenate(parts)
        joined.labels_from_model = y is None
        joined.config = {**self.config, "eps": radius}
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
        quantized = getattr(self, "quantize", None) is not None
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
            success_unquantized=result.success_unquantized.numpy() if quantized else None,
        )


def require_gradient_attack(attack: Any, role: str) -> None:
    """Raise InputError unless ``attack`` is a robustkit gradient attack (for ``role``)."""
    if not isinstance(attack, Attack):
        raise InputError(f"{role} must be a robustkit attack, got {type(attack).__name__}.")
    if attack.gradient_free:
        raise InputError(
            f"{role} must follow input gradients; {type(attack).__name__} is gradient-free "
            "(queries only) and would train or validate with a search, not a gradient step. "
            "Use PGD, FGSM or APGD."
        )
