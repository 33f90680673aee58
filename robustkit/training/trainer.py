"""`AdversarialTrainer`: PGD, fast (FGSM-RS), TRADES and mixed adversarial training on one
compiled custom step, with checkpoints, robust early stopping and an overfitting guard.

Each training step is one ``tf.function``: the attack (its loop inside the graph) runs with the
model in inference mode, then a ``tf.GradientTape`` on the weights records the training-mode
loss and the optimizer applies the gradient. Under a ``tf.distribute`` strategy every replica
attacks and differentiates its share of the global batch; the optimizer all-reduces the
gradients (Keras 3 does that in replica context) and the metrics are summed over replicas.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from robustkit.attacks import PGD, is_robust
from robustkit.attacks.base import require_gradient_attack
from robustkit.errors import InputError, OutputExistsError, RobustkitError
from robustkit.losses import cross_entropy
from robustkit.models import Classifier
from robustkit.training.data import Batches
from robustkit.training.history import TrainingHistory
from robustkit.training.methods import (
    InferenceView,
    adversarial_examples,
    check_attack,
    training_attack,
    training_terms,
)
from robustkit.training.schedules import EpsSchedule
from robustkit.training.state import TrainerState, WeightSnapshot

logger = logging.getLogger(__name__)

GUARD_ACTIONS = ("stop", "rollback", "monitor")
KEEP_CHECKPOINTS = 3
EVALUATION_BATCH = 500
# Output activations that still give logits or probabilities; anything else (sigmoid, relu, ...)
# squashes the scores and cannot be trained or attacked as a classifier.
CLASSIFIER_OUTPUTS = (None, "linear", "softmax", "log_softmax")
# Messages of the in-graph checks, recognised when TensorFlow raises them.
LABEL_CHECK = "robustkit: a label is outside the class range"
BOUNDS_CHECK = "robustkit: image values outside the classifier bounds"
FINITE_CHECK = "robustkit: the training loss or its gradient is NaN or infinite"
SCALAR = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()  # how TensorBoard recognises a scalar summary
SUMMED = ("loss", "clean_loss", "clean_correct", "adv_loss", "adv_correct", "penalty", "count")


class AdversarialTrainer:
    """Adversarial training of a Keras 3 model.

    Args:
        model: a Keras model whose output is logits (or softmax probabilities, whose logits are
            recovered), or a :class:`~robustkit.models.Classifier` wrapping one (to set bounds
            and in-graph preprocessing). Images are pixel-space floats in its bounds.
        optimizer: any Keras 3 optimizer (e.g. ``robustkit.optimizers.clipped_noisy(...)``). It
            is built eagerly on the model's trainable variables.
        attack: a :class:`~robustkit.attacks.PGD` (or FGSM) giving the threat model (norm, eps)
            and the inner maximisation (steps, step size, restarts, random start). Training gives
            every example the full budget (``early_stop`` is ignored).
        method: ``"pgd"`` (Madry), ``"fast"`` (FGSM with random start, step 1.25·eps, unless
            ``attack`` is an FGSM), ``"trades"`` or ``"mixed"``; see
            :mod:`robustkit.training.methods`.
        beta: TRADES' weight of the KL term.
        adversarial_weight: ``mixed``: weight w of the adversarial cross-entropy (clean: 1 - w).
        gradient_penalty: λ of the input-gradient penalty λ·||∇x CE(x, y)||² at the clean input
            (double backpropagation); 0 turns it off.
        attack_training_mode: run the attack's forward passes in training mode (dropout on,
            BatchNorm updating its moving statistics on every attack step). Off by default: the
            attack sees the model as at inference and only the loss pass is in training mode.
        eps_schedule: radius (pixel units) per epoch, e.g. :func:`~robustkit.training.eps_ramp`;
            default the attack's eps throughout. Each distinct radius compiles the step once.
        validation_attack: attack measuring robust validation accuracy (and the guard's
            accuracy); default PGD-10 with random start at the attack's full eps.
        restore_best: with validation data, end with the weights of the epoch of best robust
            validation accuracy (Rice et al. 2020).
        patience: with validation data, stop after this many epochs without a better robust
            validation accuracy (None: never).
        overfit_guard: catastrophic-overfitting guard: each epoch, attack a fixed training batch
            of ``guard_size`` examples with ``validation_attack`` and with the training attack
            at the same radius. It fires when the PGD accuracy falls more than ``guard_drop``
            below the best seen (a collapse), or lies more than ``guard_drop`` below the
            training attack's accuracy (the training attack is fooled: overfitting that set in
            before any robustness was learned). ``"stop"`` then restores the weights of the
            previous epoch and stops, ``"rollback"`` restores weights and optimizer state and
            carries on (stopping after ``max_rollbacks``), ``"monitor"`` only records it.
            ``"auto"``: "stop" for the fast method, off otherwise; None: off.
        seed: seed of the random generator behind every attack's random start.
    """

    def __init__(
        self,
        model: keras.Model | Classifier,
        optimizer: keras.optimizers.Optimizer,
        attack: PGD,
        method: str = "pgd",
        *,
        beta: float = 6.0,
        adversarial_weight: float = 0.5,
        gradient_penalty: float = 0.0,
        attack_training_mode: bool = False,
        eps_schedule: EpsSchedule | None = None,
        validation_attack: PGD | None = None,
        restore_best: bool = True,
        patience: int | None = None,
        overfit_guard: str | None = "auto",
        guard_size: int = 512,
        guard_drop: float = 0.2,
        max_rollbacks: int = 3,
        seed: int = 0,
    ) -> None:
        check_attack(attack, method)
        if overfit_guard == "auto":
            overfit_guard = "stop" if method == "fast" else None
        if overfit_guard is not None and overfit_guard not in GUARD_ACTIONS:
            raise InputError(f"overfit_guard must be one of {GUARD_ACTIONS}, 'auto' or None.")
        if not 0 <= adversarial_weight <= 1:
            raise InputError(f"adversarial_weight must be in [0, 1], got {adversarial_weight!r}.")
        if beta < 0 or gradient_penalty < 0:
            raise InputError("beta and gradient_penalty must be >= 0.")
        if validation_attack is not None:
            require_gradient_attack(validation_attack, "validation_attack")
        self.classifier = _as_classifier(model)
        _check_output_activation(self.classifier)
        self.optimizer = optimizer
        self.attack = attack
        self.method = method
        self.beta = float(beta)
        self.adversarial_weight = float(adversarial_weight)
        self.gradient_penalty = float(gradient_penalty)
        self.attack_training_mode = bool(attack_training_mode)
        self.eps_schedule = eps_schedule
        self.validation_attack = validation_attack or PGD(
            attack.norm, steps=10, random_start=True, seed=int(seed)
        )
        self.restore_best = bool(restore_best)
        self.patience = patience
        self.overfit_guard = overfit_guard
        self.guard_size = int(guard_size)
        self.guard_drop = float(guard_drop)
        self.max_rollbacks = int(max_rollbacks)
        self.seed = int(seed)

        model = self.classifier.model
        self._variables = list(model.trainable_variables)
        if not self._variables:
            raise InputError("The model has no trainable variables; there is nothing to train.")
        self._weights = list(model.weights)
        self._view = InferenceView(self.classifier, training=self.attack_training_mode)
        self._strategy = tf.distribute.get_strategy()
        with self._strategy.scope():
            if not optimizer.built:
                optimizer.build(self._variables)
            self._rng = tf.random.Generator.from_seed(self.seed)
            self._state = TrainerState(self._weights)
            self._totals = {
                name: tf.Variable(0.0, trainable=False, name=name)
                for name in (*SUMMED, "grad_norm", "steps")
            }
        self._steps: dict[Any, Any] = {}
        self._evaluators: dict[int, Any] = {}
        self._good: WeightSnapshot | None = None
        self._guard_attack: PGD | None = None

    # ------------------------------------------------------------------ the compiled step

    @property
    def traces(self) -> int:
        """How many times training steps were traced (one per input signature)."""
        return sum(step.experimental_get_tracing_count() for step in self._steps.values())

    def _train_step(self, spec: Any) -> Any:
        """The compiled step ``(batch, eps)`` for this input signature (cached). The radius is a
        tensor argument, so an eps ramp over the epochs reuses one trace."""
        key = spec
        if key in self._steps:
            return self._steps[key]
        attack = training_attack(self.attack, self.method, self.attack.norm.eps)
        strategy = self._strategy

        def replica_step(
            x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, eps: tf.Tensor
        ) -> dict[str, tf.Tensor]:
            context = tf.distribute.get_replica_context()
            seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
            x = self._checked_images(x, y)
            x_adv, inference_logits = adversarial_examples(
                self.method,
                attack,
                self._view,
                x,
                y,
                seed,
                eps=eps,
                gradient_penalty=self.gradient_penalty,
            )
            count = tf.cast(tf.shape(y)[0], tf.float32)
            global_count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
            with tf.GradientTape() as tape:
                terms = training_terms(
                    self.method,
                    self.classifier,
                    x,
                    y,
                    x_adv,
                    inference_logits,
                    beta=self.beta,
                    adversarial_weight=self.adversarial_weight,
                    gradient_penalty=self.gradient_penalty,
                )
                loss = tf.reduce_sum(terms.objective) / global_count
            gradients = tape.gradient(
                loss, self._variables, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            replicas = context.num_replicas_in_sync
            # The norm of the global gradient; several replicas need its sum (one more
            # all-reduce), the optimizer then all-reduces the local gradients itself.
            total = (
                gradients
                if replicas == 1
                else context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            )
            grad_norm = tf.linalg.global_norm(total)
            finite = tf.debugging.assert_all_finite(tf.stack([loss, grad_norm]), FINITE_CHECK)
            with tf.control_dependencies([finite]):
                gradients = [tf.identity(g) for g in gradients]
            self.optimizer.apply(gradients, self._variables)
            return {
                "loss": tf.reduce_sum(terms.objective),
                "clean_loss": tf.reduce_sum(cross_entropy(terms.clean_logits, y)),
                "clean_correct": _correct(terms.clean_logits, y),
                "adv_loss": tf.reduce_sum(cross_entropy(terms.adv_logits, y)),
                "adv_correct": _correct(terms.adv_logits, y),
                "penalty": tf.reduce_sum(terms.penalty),
                "count": count,
                "grad_norm": grad_norm / replicas,
            }

        def step(batch: tuple[Any, Any], eps: tf.Tensor) -> None:
            x, y = batch
            seed = self._rng.uniform_full_int([2], tf.int32)
            results = strategy.run(replica_step, args=(x, y, seed, eps))
            for name, value in results.items():
                total = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                self._totals[name].assign_add(total)
            self._totals["steps"].assign_add(1.0)

        signature = [spec, tf.TensorSpec((), tf.float32)]
        self._steps[key] = tf.function(step, input_signature=signature)
        return self._steps[key]

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

    # ------------------------------------------------------------------ evaluation

    def _evaluator(self, attack: PGD) -> Any:
        """Compiled clean + attacked evaluation of one batch, returning summed metrics."""
        if id(attack) in self._evaluators:
            return self._evaluators[id(attack)]
        classifier = self.classifier

        def evaluate(x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            clean_logits = classifier.logits(x)
            adv_logits = attack.run(classifier, x, y, seed).logits
            clean_correct = _predicts(clean_logits, y)
            return {
                "clean_loss": tf.reduce_sum(cross_entropy(clean_logits, y)),
                "clean_correct": tf.reduce_sum(tf.cast(clean_correct, tf.float32)),
                "adv_loss": tf.reduce_sum(cross_entropy(adv_logits, y)),
                "adv_correct": tf.reduce_sum(
                    tf.cast(is_robust(clean_correct, ~_predicts(adv_logits, y)), tf.float32)
                ),
            }

        signature = [
            tf.TensorSpec((None, *classifier.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((2,), tf.int32),
        ]
        self._evaluators[id(attack)] = tf.function(evaluate, input_signature=signature)
        return self._evaluators[id(attack)]

    def evaluate(
        self, x: Any, y: Any, attack: PGD | None = None, batch_size: int = EVALUATION_BATCH
    ) -> dict[str, float]:
        """Clean and robust accuracy and loss on (x, y), with the model in inference mode.

        Returns ``{"clean_loss", "clean_accuracy", "adv_loss", "adv_accuracy"}``; robust
        accuracy counts an example only if both its clean and attacked images are classified
        right. The attack (default ``validation_attack``) is seeded per batch, so repeated
        evaluations of the same weights give the same numbers.
        """
        batches = Batches(
            (x, y), self.classifier, batch_size=batch_size, shuffle=False, seed=0, name="x"
        )
        return self._evaluate_batches(batches, attack or self.validation_attack)

    def _evaluate_batches(self, batches: Batches, attack: PGD) -> dict[str, float]:
        function = self._evaluator(attack)
        sums: dict[str, float] = {}
        count = 0
        for index, (x, y) in enumerate(batches.epoch(0)):
            seed = tf.constant([attack.seed, index], tf.int32)
            for name, value in function(x, y, seed).items():
                sums[name] = sums.get(name, 0.0) + float(value)
            count += int(tf.shape(y)[0])
        return {
            "clean_loss": sums["clean_loss"] / count,
            "clean_accuracy": sums["clean_correct"] / count,
            "adv_loss": sums["adv_loss"] / count,
            "adv_accuracy": sums["adv_correct"] / count,
        }

    # ------------------------------------------------------------------ training loop

    def fit(
        self,
        train: Any,
        epochs: int,
        *,
        validation: Any = None,
        batch_size: int = 128,
        shuffle: bool = True,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        checkpoint_dir: str | None = None,
        resume: bool = False,
        log_dir: str | None = None,
    ) -> TrainingHistory:
        """Train until ``epochs`` epochs have run in all (counting those of a resumed run).

        Args:
            train: ``(x, y)`` NumPy arrays (x float [N, H, W, C] in bounds, y int [N]) or a
                ``tf.data.Dataset`` of ``(x, y)`` batches (global batches under a strategy).
            validation: the same forms; enables robust early stopping and ``val_*`` metrics.
            batch_size: global batch size for arrays (split across replicas by a strategy).
            shuffle: reorder arrays each epoch (by a permutation fixed by seed and epoch).
            callbacks: Keras callbacks (e.g. :class:`~robustkit.training.ProgressLogger`);
                they get per-epoch logs, and may stop training with ``model.stop_training``.
            checkpoint_dir: save model, optimizer, random-generator state, epoch, best weights
                and history there after every epoch (``tf.train.CheckpointManager``).
            resume: continue from the latest checkpoint in ``checkpoint_dir``, exactly where
                it stopped (epochs, data order, random draws, optimizer state). Without it an
                existing checkpoint raises OutputExistsError rather than being overwritten.
            log_dir: write each epoch's metrics as TensorBoard scalars there.

        Returns:
            The :class:`TrainingHistory` of every epoch run so far.

        Raises:
            InputError: malformed data, labels outside the class range, images outside bounds.
            RobustkitError: the loss became NaN or infinite (the faulty update is not applied).
        """
        if int(epochs) < 0:
            raise InputError(f"epochs must be >= 0, got {epochs!r}.")
        train_batches = Batches(
            train,
            self.classifier,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=self.seed,
            name="train",
        )
        validation_batches = None
        if validation is not None:
            validation_batches = Batches(
                validation,
                self.classifier,
                batch_size=EVALUATION_BATCH,
                shuffle=False,
                seed=0,
                name="validation",
            )
        self._check_outputs(train_batches)
        manager = self._checkpoint_manager(checkpoint_dir, resume)
        history = self._state.history()
        guard_batches = self._guard_batches(train_batches)
        writer = tf.summary.create_file_writer(log_dir) if log_dir else None
        model = self.classifier.model
        callback_list = keras.callbacks.CallbackList(
            callbacks, model=model, epochs=int(epochs), steps=train_batches.steps, verbose=0
        )
        model.stop_training = False
        callback_list.on_train_begin()
        logs: dict[str, float] = {}
        epoch = int(self._state.epoch.numpy())
        if history.stop_reason is not None:
            logger.info(
                "The resumed run had stopped (%s); nothing left to do.", history.stop_reason
            )
            epoch = int(epochs)
        while epoch < int(epochs):
            logs = self._run_epoch(epoch, train_batches, callback_list)
            if validation_batches is not None:
                logs.update(self._validate(epoch, validation_batches, history))
            if guard_batches is not None:
                logs.update(self._check_guard(epoch, guard_batches, history))
            history.append(epoch, logs)
            history.stop_reason = self._stop_reason(epoch, history, model)
            self._state.epoch.assign(epoch + 1)
            self._state.store_history(history)
            if manager is not None:
                manager.save(checkpoint_number=epoch + 1)
            _write_summaries(writer, epoch, logs)
            logger.info(
                "epoch %d/%d: %s",
                epoch + 1,
                epochs,
                ", ".join(f"{k}={v:.4g}" for k, v in logs.items()),
            )
            callback_list.on_epoch_end(epoch, logs)
            epoch += 1
            if history.stop_reason is not None:
                logger.info("Training stopped after epoch %d: %s", epoch, history.stop_reason)
                break
        self._restore_best(history)
        callback_list.on_train_end(logs)
        return history

    def _run_epoch(
        self, epoch: int, batches: Batches, callback_list: keras.callbacks.CallbackList
    ) -> dict[str, float]:
        """One pass over the training data; returns the epoch's mean metrics."""
        eps = float(self.eps_schedule(epoch)) if self.eps_schedule else self.attack.norm.eps
        if not (math.isfinite(eps) and eps >= 0):
            raise InputError(f"eps_schedule gave {eps!r} for epoch {epoch}; need a finite >= 0.")
        for total in self._totals.values():
            total.assign(0.0)
        callback_list.on_epoch_begin(epoch)
        started = time.perf_counter()
        dataset = self._strategy.experimental_distribute_dataset(batches.epoch(epoch))
        step = self._train_step(dataset.element_spec)
        radius = tf.constant(eps, tf.float32)
        for index, batch in enumerate(dataset):
            callback_list.on_train_batch_begin(index)
            try:
                step(batch, radius)
            except tf.errors.InvalidArgumentError as error:
                translated = self._translated(error, epoch, index)
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
            "eps": eps,
            "lr": _learning_rate(self.optimizer),
            "seconds": time.perf_counter() - started,
        }

    def _validate(self, epoch: int, batches: Batches, history: TrainingHistory) -> dict[str, float]:
        """Validation metrics; keeps the weights of the best robust accuracy so far."""
        metrics = self._evaluate_batches(batches, self.validation_attack)
        robust = metrics["adv_accuracy"]
        if robust > float(self._state.best_metric.numpy()):
            self._state.best_metric.assign(robust)
            self._state.best_epoch.assign(epoch)
            self._state.best_weights.take(self._weights)
            history.best_epoch, history.best_val_adv_accuracy = epoch, robust
        return {f"val_{name}": value for name, value in metrics.items()}

    def _guard_batches(self, train_batches: Batches) -> Batches | None:
        """The fixed training batch the overfitting guard attacks each epoch (None: off)."""
        if self.overfit_guard is None:
            return None
        with self._strategy.scope():
            if self._good is None:
                variables = self._weights + list(self.optimizer.variables)
                self._good = WeightSnapshot(variables, name="last_good")
        self._good.take(self._weights + list(self.optimizer.variables))
        return Batches(
            train_batches.first(self.guard_size),
            self.classifier,
            batch_size=EVALUATION_BATCH,
            shuffle=False,
            seed=0,
            name="guard",
        )

    def _check_guard(
        self, epoch: int, batches: Batches, history: TrainingHistory
    ) -> dict[str, float]:
        """Attack the guard batch; on a sharp drop, or a PGD accuracy far below the training
        attack's, stop or roll back to the last good epoch."""
        accuracy = self._evaluate_batches(batches, self.validation_attack)["adv_accuracy"]
        own = self._evaluate_batches(batches, self._guard_training_attack())["adv_accuracy"]
        logs = {"guard_accuracy": accuracy, "guard_training_attack_accuracy": own}
        reference = float(self._state.guard_reference.numpy())
        variables = self._weights + list(self.optimizer.variables)
        reasons = []
        if reference - accuracy > self.guard_drop:
            reasons.append(f"PGD accuracy fell from {reference:.3f} to {accuracy:.3f}")
        if own - accuracy > self.guard_drop:
            reasons.append(f"PGD accuracy {accuracy:.3f} but the training attack's {own:.3f}")
        if not reasons or self.overfit_guard == "monitor":  # these weights stay
            self._state.guard_reference.assign(max(reference, accuracy))
            self._good.take(variables)
        else:
            self._good.put_back(variables)
        if not reasons:
            return {**logs, "guard_fired": 0.0}
        history.add_event(
            epoch,
            "overfit_guard",
            action=self.overfit_guard,
            guard_accuracy=accuracy,
            reference=reference,
            training_attack_accuracy=own,
            reason="; ".join(reasons),
        )
        logger.warning(
            "Catastrophic overfitting at epoch %d on the guard batch: %s (guard action: %s).",
            epoch + 1,
            "; ".join(reasons),
            self.overfit_guard,
        )
        return {**logs, "guard_fired": 1.0}

    def _guard_training_attack(self) -> PGD:
        """The training attack at the guard's radius (built once, so compiled once)."""
        if self._guard_attack is None:
            eps = self.validation_attack.norm.eps
            self._guard_attack = training_attack(self.attack, self.method, eps)
        return self._guard_attack

    def _stop_reason(self, epoch: int, history: TrainingHistory, model: Any) -> str | None:
        """Why training stops after this epoch, or None to carry on."""
        fired = [e for e in history.events if e["event"] == "overfit_guard"]
        if fired and fired[-1]["epoch"] == epoch:
            if self.overfit_guard == "stop":
                return "overfit_guard"
            if self.overfit_guard == "rollback" and len(fired) > self.max_rollbacks:
                return "overfit_guard_rollbacks"
        best = int(self._state.best_epoch.numpy())
        if self.patience is not None and best >= 0 and epoch - best >= self.patience:
            return "patience"
        if getattr(model, "stop_training", False):
            return "callback"
        return None

    def _restore_best(self, history: TrainingHistory) -> None:
        """End with the weights of the best robust validation epoch (an event when they are
        not the last epoch's)."""
        best = int(self._state.best_epoch.numpy())
        if not self.restore_best or best < 0:
            return
        self._state.best_weights.put_back(self._weights)
        last = history.epoch[-1]
        already = history.events and history.events[-1].get("event") == "restored_best"
        if best != last and not already:
            history.add_event(last, "restored_best", best_epoch=best)
            logger.info(
                "Restored the weights of epoch %d (best robust validation accuracy).", best + 1
            )

    def _translated(
        self, error: tf.errors.InvalidArgumentError, epoch: int, step: int
    ) -> RobustkitError | None:
        """A robustkit error for a failed in-graph check (None for any other error)."""
        where = f"(epoch {epoch + 1}, batch {step + 1})"
        if LABEL_CHECK in error.message:
            return InputError(
                f"A training batch {where} holds a label outside the class range 0.."
                f"{self.classifier.num_classes - 1}; labels must be class indices."
            )
        if BOUNDS_CHECK in error.message:
            low, high = self.classifier.bounds
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

    # ------------------------------------------------------------------ set-up checks

    def _checkpoint_manager(
        self, directory: str | None, resume: bool
    ) -> tf.train.CheckpointManager | None:
        """The checkpoint manager; restores the latest checkpoint when resuming."""
        if directory is None:
            if resume:
                raise InputError("resume=True needs the checkpoint_dir of the interrupted run.")
            self._reset_state()
            return None
        checkpoint = tf.train.Checkpoint(
            model=self.classifier.model,
            optimizer=self.optimizer,
            rng=self._rng,
            state=self._state,
        )
        manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=KEEP_CHECKPOINTS)
        if manager.latest_checkpoint is None:
            self._reset_state()
            if resume:
                logger.info("No checkpoint in %s; starting from epoch 1.", directory)
            return manager
        if not resume:
            raise OutputExistsError(
                f"{directory} already holds checkpoints ({manager.latest_checkpoint}). Pass "
                "resume=True to continue that run, or choose an empty directory."
            )
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise InputError(
                f"The checkpoint {manager.latest_checkpoint} does not match this model and "
                f"optimizer: {error}"
            ) from error
        logger.info(
            "Resuming from %s at epoch %d.",
            manager.latest_checkpoint,
            int(self._state.epoch.numpy()) + 1,
        )
        return manager

    def _reset_state(self) -> None:
        """A fresh run: epoch 0, no best, no guard reference, empty history."""
        self._state.epoch.assign(0)
        self._state.best_metric.assign(-1.0)
        self._state.best_epoch.assign(-1)
        self._state.guard_reference.assign(-1.0)
        self._state.store_history(TrainingHistory())

    def _check_outputs(self, batches: Batches) -> None:
        """Fail before training when the model's outputs on training images are unusable."""
        if self.classifier.num_classes < 2:
            raise InputError(
                f"The model has {self.classifier.num_classes} output; a classifier needs one "
                "logit per class (two or more)."
            )
        x, _ = batches.first(64)
        logits = self.classifier.logits(tf.convert_to_tensor(x))
        if not np.all(np.isfinite(logits.numpy())):
            raise InputError(
                "The model outputs NaN or Inf on the first training images; check the model's "
                "weights and the classifier's preprocessing."
            )


def _as_classifier(model: Any) -> Classifier:
    if isinstance(model, Classifier):
        classifier = model
    elif isinstance(model, keras.Model):
        classifier = Classifier(model)
    else:
        raise InputError(
            f"model must be a Keras model or a robustkit Classifier, got {type(model).__name__}."
        )
    if not isinstance(classifier.model, keras.Model):
        raise InputError("The classifier must wrap a Keras model for its weights to be trained.")
    return classifier


def _check_output_activation(classifier: Classifier) -> None:
    """Raise when the model's last layer squashes its outputs (neither logits nor softmax)."""
    layers = getattr(classifier.model, "layers", None)
    if not layers:
        return
    activation = getattr(layers[-1], "activation", None)
    name = getattr(activation, "__name__", None)
    if activation is not None and name not in CLASSIFIER_OUTPUTS:
        raise InputError(
            f"The model's last layer {layers[-1].name!r} applies {name!r}, so its outputs are "
            "neither logits nor softmax probabilities. Remove that activation (train on logits)."
        )


def _predicts(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)


def _correct(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(_predicts(logits, y), tf.float32))


def _learning_rate(optimizer: Any) -> float:
    try:
        return float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return float("nan")


def _write_summaries(writer: Any, epoch: int, logs: dict[str, float]) -> None:
    """Each metric as a TensorBoard scalar at step ``epoch`` (written with the core summary op,
    so the tensorboard package is not needed)."""
    if writer is None:
        return
    with writer.as_default():
        for name, value in logs.items():
            tf.summary.write(name, tf.constant(value, tf.float32), step=epoch, metadata=SCALAR)
    writer.flush()
