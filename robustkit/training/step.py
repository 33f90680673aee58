"""`TrainingStep`: one compiled adversarial-training step, run over an epoch of batches.

Each step is one ``tf.function``: the attack (its loop inside the graph) runs with the model in
inference mode, then a ``tf.GradientTape`` on the weights records the training-mode loss and the
optimizer applies the gradient. Under a ``tf.distribute`` strategy every replica attacks and
differentiates its share of the global batch; the optimizer all-reduces the gradients (Keras 3
does that in replica context) and the metrics are summed over replicas.

In-graph checks stop a step whose labels or pixels are out of range, or whose loss or gradient
is not finite, before the update is applied; :func:`translated_error` turns the failure into a
robustkit error that says which epoch and batch, and what to do. With adversarial weight
perturbation (:mod:`~robustkit.training.awp`) the gradient is taken at the perturbed weights.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD
from robustkit.errors import InputError, RobustkitError
from robustkit.losses import cross_entropy
from robustkit.models import Classifier
from robustkit.tracing import compile_with_signature
from robustkit.training.awp import WeightPerturbation
from robustkit.training.methods import (
    InferenceView,
    MethodSettings,
    Terms,
    adversarial_examples,
    training_attack,
    training_terms,
)

# Messages of the in-graph checks, recognised when TensorFlow raises them.
LABEL_CHECK = "robustkit: a label is outside the class range"
BOUNDS_CHECK = "robustkit: image values outside the classifier bounds"
FINITE_CHECK = "robustkit: the training loss or its gradient is NaN or infinite"
SUMMED = (
    "loss",
    "clean_loss",
    "clean_correct",
    "adv_loss",
    "adv_correct",
    "penalty",
    "misalignment",
    "count",
)


class TrainingStep:
    """The compiled step ``(batch, eps)`` of one method, with the per-epoch metric sums.

    Args:
        classifier: the model being trained (its Keras model's trainable variables are).
        optimizer: a built Keras 3 optimizer.
        attack: the training attack as given (threat model and inner maximisation).
        settings: the method and its options.
        attack_training_mode: run the attack's forward passes in training mode.
        awp: the relative radius of adversarial weight perturbation (None: off).
        seed: seed of the generator that draws each batch's attack seed.

    Build it inside the strategy scope the steps run under; the generator and the metric sums
    are variables of that scope (``rng`` is checkpointed with the trainer).
    """

    def __init__(
        self,
        classifier: Classifier,
        optimizer: keras.optimizers.Optimizer,
        attack: PGD,
        settings: MethodSettings,
        *,
        attack_training_mode: bool,
        awp: float | None,
        seed: int,
    ) -> None:
        self.classifier = classifier
        self.optimizer = optimizer
        self.attack = training_attack(attack, settings.method, attack.norm.eps)
        self.settings = settings
        self.awp = None if awp is None else WeightPerturbation(classifier.model, awp)
        self.variables = list(classifier.model.trainable_variables)
        self.strategy = tf.distribute.get_strategy()
        self.rng = tf.random.Generator.from_seed(seed)
        self._view = InferenceView(classifier, training=attack_training_mode)
        self._totals = {
            name: tf.Variable(0.0, trainable=False, name=name)
            for name in (*SUMMED, "grad_norm", "steps")
        }
        self._functions: dict[Any, Any] = {}

    @property
    def traces(self) -> int:
        """How many times the step was traced (one per input signature)."""
        return sum(f.experimental_get_tracing_count() for f in self._functions.values())

    def run_epoch(
        self,
        dataset: tf.data.Dataset,
        eps: float,
        epoch: int,
        callback_list: keras.callbacks.CallbackList,
    ) -> dict[str, float]:
        """Train on every batch of ``dataset`` at radius ``eps`` (pixel units); the epoch's
        mean loss, clean_loss, clean_accuracy, adv_loss, adv_accuracy, grad_norm, penalty and
        misalignment (GradAlign's 1 - cos), with its eps, the learning rate after it (lr) and
        its wall time (seconds).

        Raises:
            InputError: a batch with a label out of range or pixels outside the bounds.
            RobustkitError: a non-finite loss or gradient (that update is not applied).
        """
        started = time.perf_counter()
        for total in self._totals.values():
            total.assign(0.0)
        distributed = self.strategy.experimental_distribute_dataset(dataset)
        function = self._function(distributed.element_spec)
        radius = tf.constant(eps, tf.float32)
        for index, batch in enumerate(distributed):
            callback_list.on_train_batch_begin(index)
            try:
                function(batch, radius)
            except tf.errors.InvalidArgumentError as error:
                translated = translated_error(error, self.classifier, epoch, index)
                if translated is None:
                    raise
                raise translated from error
            callback_list.on_train_batch_end(index)
        totals = {name: float(v.numpy()) for name, v in self._totals.items()}
        count = max(totals["count"], 1.0)
        return {
            "loss": totals["loss"] / count,
            "clean_loss": totals["clean_loss"] / count,
            "clean_accuracy": totals["clean_correct"] / count,
            "adv_loss": totals["adv_loss"] / count,
            "adv_accuracy": totals["adv_correct"] / count,
            "grad_norm": totals["grad_norm"] / max(totals["steps"], 1.0),
            "penalty": totals["penalty"] / count,
            "misalignment": totals["misalignment"] / count,
            "eps": eps,
            "lr": _learning_rate(self.optimizer),
            "seconds": time.perf_counter() - started,
        }

    def _function(self, spec: Any) -> Any:
        """The compiled step ``(batch, eps)`` for this input signature (cached). The radius is a
        tensor argument, so an eps ramp over the epochs reuses one trace."""
        if spec not in self._functions:
            signature = [spec, tf.TensorSpec((), tf.float32)]
            self._functions[spec] = compile_with_signature(self._step, signature)
        return self._functions[spec]

    def _step(self, batch: tuple[Any, Any], eps: tf.Tensor) -> None:
        x, y = batch
        seed = self.rng.uniform_full_int([2], tf.int32)
        results = self.strategy.run(self._replica_step, args=(x, y, seed, eps))
        for name, value in results.items():
            total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            self._totals[name].assign_add(total)
        self._totals["steps"].assign_add(1.0)

    def _replica_step(
        self, x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, eps: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """One replica's share: attack, loss, gradient, update; its metric sums."""
        context = tf.distribute.get_replica_context()
        seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
        x = self._checked_images(x, y)
        attacked = adversarial_examples(self.settings, self.attack, self._view, x, y, seed, eps=eps)
        count = tf.cast(tf.shape(y)[0], tf.float32)
        global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)

        def objective() -> tuple[Terms, tf.Tensor]:
            terms = training_terms(self.settings, self.classifier, x, y, attacked)
            return terms, tf.reduce_sum(terms.objective) / global_count

        if self.awp is None:
            with tf.GradientTape() as tape:
                terms, loss = objective()
            gradients = tape.gradient(
                loss, self.variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        else:
            terms, loss, gradients = self.awp.gradients(objective, context)
        replicas = context.num_replicas_in_sync
        # The norm of the global gradient; several replicas need its sum (one more all-reduce),
        # the optimizer then all-reduces the local gradients itself.
        total = (
            gradients
            if replicas == 1
            else context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        )
        grad_norm = tf.linalg.global_norm(total)
        finite = tf.debugging.assert_all_finite(tf.stack([loss, grad_norm]), FINITE_CHECK)
        with tf.control_dependencies([finite]):
            gradients = [tf.identity(g) for g in gradients]
        self.optimizer.apply(gradients, self.variables)
        return {
            "loss": tf.reduce_sum(terms.objective),
            "clean_loss": tf.reduce_sum(cross_entropy(terms.clean_logits, y)),
            "clean_correct": _correct(terms.clean_logits, y),
            "adv_loss": tf.reduce_sum(cross_entropy(terms.adv_logits, y)),
            "adv_correct": _correct(terms.adv_logits, y),
            "penalty": tf.reduce_sum(terms.penalty),
            "misalignment": tf.reduce_sum(terms.misalignment),
            "count": count,
            "grad_norm": grad_norm / replicas,
        }

    def _checked_images(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """x, once labels and pixel values are known to be in range (in-graph checks)."""
        low, high = self.classifier.bounds
        checks = [
            tf.debugging.assert_non_negative(y, message=LABEL_CHECK),
            tf.debugging.assert_less(y, self.classifier.num_classes, message=LABEL_CHECK),
            tf.debugging.assert_greater_equal(x, low, message=BOUNDS_CHECK),
            tf.debugging.assert_less_equal(x, high, message=BOUNDS_CHECK),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(x)


def translated_error(
    error: tf.errors.InvalidArgumentError, classifier: Classifier, epoch: int, step: int
) -> RobustkitError | None:
    """A robustkit error for a failed in-graph check of batch ``step`` of ``epoch`` (0-based),
    or None for any other error."""
    where = f"(epoch {epoch + 1}, batch {step + 1})"
    if LABEL_CHECK in error.message:
        return InputError(
            f"A training batch {where} holds a label outside the class range 0.."
            f"{classifier.num_classes - 1}; labels must be class indices."
        )
    if BOUNDS_CHECK in error.message:
        low, high = classifier.bounds
        return InputError(
            f"Training images {where} have values outside the classifier bounds "
            f"[{low:g}, {high:g}]; rescale them (e.g. x / 255) or set the Classifier's bounds."
        )
    if FINITE_CHECK in error.message:
        return RobustkitError(
            f"The training loss or its gradient became NaN or infinite {where}; that update "
            "was not applied. Lower the learning rate, clip gradients, or check the data."
        )
    return None


def _correct(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """How many rows of logits [N, K] predict their label y [N] (float32 scalar)."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32))


def _learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's current learning rate (NaN when it has none to read)."""
    try:
        return float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return float("nan")
