"""`AdversarialTrainer`: PGD, fast (FGSM-RS, N-FGSM), TRADES, mixed and MART adversarial
training, with GradAlign, AWP and weight averaging as options, robust validation, best-epoch
weights, an overfitting guard, checkpoints and TensorBoard summaries.

The trainer only runs the epoch loop; each job is a part of its own: the compiled step
(:mod:`~robustkit.training.step`), validation through :mod:`robustkit.evaluation`
(:mod:`~robustkit.training.validation`), the guards (:mod:`~robustkit.training.guard`), the
options (:mod:`~robustkit.training.fast`, :mod:`~robustkit.training.awp`,
:mod:`~robustkit.training.ema`), checkpoints (:mod:`~robustkit.training.checkpoints`) and summaries
(:mod:`~robustkit.training.summaries`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.attacks import PGD
from robustkit.cluster import naming_lost_workers, writes_outputs
from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.training.awp import check_radius
from robustkit.training.checkpoints import TrainingCheckpoints, restart_advice
from robustkit.training.data import Batches
from robustkit.training.ema import AveragedWeights, averaged_or_own
from robustkit.training.fast import NFGSM
from robustkit.training.guard import OverfitGuard, RobustEarlyStopping, judge_guard_batch
from robustkit.training.history import TrainingHistory
from robustkit.training.methods import MethodSettings, check_attack, training_attack
from robustkit.training.model_checks import PROBE_COUNT, check_outputs, trainable_classifier
from robustkit.training.schedules import EpsSchedule
from robustkit.training.state import TrainerState
from robustkit.training.step import TrainingStep
from robustkit.training.summaries import EpochSummaries
from robustkit.training.validation import (
    EVALUATION_BATCH,
    ValidationAttack,
    Validator,
    default_validation_attack,
)

logger = logging.getLogger(__name__)


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
            ``attack`` is an FGSM), ``"trades"``, ``"mixed"`` or ``"mart"``; see
            :mod:`robustkit.training.methods`.
        beta: TRADES' and MART's weight of the KL term.
        adversarial_weight: ``mixed``: weight w of the adversarial cross-entropy (clean: 1 - w).
        gradient_penalty: λ of the input-gradient penalty λ·||∇x CE(x, y)||² at the clean input
            (double backpropagation); 0 turns it off.
        grad_align: λ of GradAlign's λ·(1 - cos(∇x CE(x), ∇x CE(x + δ))), δ uniform in the
            eps-ball (double backpropagation); 0 turns it off.
        n_fgsm: ``method="fast"`` only: :class:`~robustkit.training.NFGSM` settings run N-FGSM
            (noise U[-k·eps, k·eps], step α, no projection) instead of FGSM-RS.
        awp: relative radius gamma of adversarial weight perturbation (e.g. 5e-3): the gradient
            is taken at w + v, v_l = gamma·||w_l||·g_l/||g_l|| (:mod:`~robustkit.training.awp`).
        ema_weights: validate (and pick the best epoch) on the optimizer's moving average of the
            weights and end training with it in the model; needs ``use_ema=True``.
        deterministic: ``tf.config.experimental.enable_op_determinism()`` (process-wide), so the
            same seeds give the same weights from one process to the next; seed the model's
            initialisation yourself (``keras.utils.set_random_seed``).
        attack_training_mode: run the attack's forward passes in training mode (dropout on,
            BatchNorm updating its moving statistics on every attack step). Off by default: the
            attack sees the model as at inference and only the loss pass is in training mode.
        eps_schedule: radius (pixel units) per epoch, e.g. :func:`~robustkit.training.eps_ramp`;
            default the attack's eps throughout. The radius is a tensor argument of the step.
        validation_attack: measures robust validation accuracy (and the guard's): a gradient
            attack, or a suite (attacks and :class:`~robustkit.evaluation.SuiteAttack` entries,
            e.g. ``quick_suite()``) run as a cascade by :mod:`robustkit.evaluation` on the
            trainer's strategy. Default APGD-CE, 20 steps, at the attack's norm and full eps.
        restore_best: with validation data, end with the weights of the epoch of best robust
            validation accuracy (Rice et al. 2020), kept by ``trainer.early_stopping``.
        patience: with validation data, stop after this many epochs in a row without a better
            robust validation accuracy (None: never).
        overfit_guard: catastrophic-overfitting guard (:class:`~robustkit.training.OverfitGuard`)
            on a fixed training batch of ``guard_size`` examples, attacked each epoch with
            ``validation_attack`` and with the training attack at the same radius; it fires on a
            drop of more than ``guard_drop``. ``"stop"`` restores the previous epoch's weights
            and stops, ``"rollback"`` restores weights and optimizer state and carries on (until
            ``max_rollbacks``), ``"monitor"`` only records it. ``"auto"``: "stop" for the fast
            method (FGSM-RS), "monitor" for it with N-FGSM or GradAlign (their cure keeps the
            training attack well above the validation attack while robustness still grows, so
            the gap trigger fires on healthy runs: benchmarks/RESULTS.md), else off; None: off.
        seed: seed of the training attack's random starts (and of a validation suite's).

    Build the trainer inside a ``tf.distribute`` strategy's scope to train and validate under it.
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
        grad_align: float = 0.0,
        n_fgsm: NFGSM | None = None,
        awp: float | None = None,
        ema_weights: bool = False,
        deterministic: bool = False,
        attack_training_mode: bool = False,
        eps_schedule: EpsSchedule | None = None,
        validation_attack: ValidationAttack | None = None,
        restore_best: bool = True,
        patience: int | None = None,
        overfit_guard: str | None = "auto",
        guard_size: int = 512,
        guard_drop: float = 0.2,
        max_rollbacks: int = 3,
        seed: int = 0,
    ) -> None:
        check_attack(attack, method)
        settings = MethodSettings(
            method, beta, adversarial_weight, gradient_penalty, grad_align, n_fgsm
        )
        awp = check_radius(awp)
        if overfit_guard == "auto":
            cured = n_fgsm is not None or grad_align > 0
            overfit_guard = ("monitor" if cured else "stop") if method == "fast" else None
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.classifier = trainable_classifier(model)
        self.optimizer = optimizer
        self.attack = attack
        self.method = method
        self.eps_schedule = eps_schedule
        self.guard_size = int(guard_size)
        self.seed = int(seed)
        if validation_attack is None:
            validation_attack = default_validation_attack(attack.norm, self.seed)
        self.validation_attack = validation_attack
        strategy = tf.distribute.get_strategy()
        evaluation_strategy = strategy if tf.distribute.has_strategy() else None
        # measures the val_* metrics and the guard's accuracy, under the trainer's strategy
        self.validator = Validator(
            self.classifier, validation_attack, attack.norm, strategy=evaluation_strategy, seed=seed
        )
        weights = list(self.classifier.model.weights)
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(self.classifier.model.trainable_variables)
            self._step = TrainingStep(
                self.classifier,
                optimizer,
                attack,
                settings,
                attack_training_mode=bool(attack_training_mode),
                awp=awp,
                seed=self.seed,
            )
            self._state = TrainerState()
            self.early_stopping = RobustEarlyStopping(
                weights, patience=patience, restore_best_weights=restore_best
            )
            self.guard = None
            if overfit_guard is not None:
                self.guard = OverfitGuard(
                    weights + list(optimizer.variables), overfit_guard, guard_drop, max_rollbacks
                )
        self.averaged = AveragedWeights(self.classifier.model, optimizer) if ema_weights else None
        if self.guard is not None:  # the training attack at the validation radius
            own = training_attack(attack, method, self.validator.norm.eps)
            self._guard_validator = Validator(
                self.classifier, own, own.norm, strategy=evaluation_strategy, seed=seed
            )

    @property
    def traces(self) -> int:
        """How many times training steps were traced (one per input signature)."""
        return self._step.traces

    def evaluate(
        self,
        x: Any,
        y: Any,
        attack: ValidationAttack | None = None,
        batch_size: int = EVALUATION_BATCH,
    ) -> dict[str, float]:
        """Clean and robust accuracy and loss on (x, y), with the model in inference mode.

        Returns ``{"clean_loss", "clean_accuracy", "adv_loss", "adv_accuracy"}``; robust
        accuracy counts an example only if it is classified right and no attack broke it. The
        attack (default ``validation_attack``) runs through :mod:`robustkit.evaluation` with
        per-example random keys, so repeated evaluations of the same weights give the same
        numbers, whatever ``batch_size`` (examples per compiled chunk).
        """
        validator = self.validator
        if attack is not None or batch_size != validator.executor.batch_size:
            validator = Validator(
                self.classifier,
                self.validation_attack if attack is None else attack,
                self.attack.norm,
                strategy=validator.executor.strategy,
                seed=self.seed,
                batch_size=batch_size,
            )
        return validator.measure(x, y)

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
            train: ``(x, y)`` NumPy arrays (x float [N, H, W, C] in bounds, y int [N]), a
                ``tf.data.Dataset`` of ``(x, y)`` batches (global batches under a strategy), or
                a function ``epoch -> Dataset`` (the batches of that epoch: a resumed run gets
                the same ones, where a reshuffling dataset starts its shuffles over).
            validation: the same forms; enables robust early stopping and ``val_*`` metrics.
            batch_size: global batch size for arrays (split across replicas by a strategy).
            shuffle: reorder arrays each epoch (by a permutation fixed by seed and epoch).
            callbacks: Keras callbacks (e.g. :class:`~robustkit.training.ProgressLogger`);
                they get per-epoch logs, and may stop training with ``model.stop_training``.
            checkpoint_dir: save model, optimizer, random-generator state, epoch, guards and
                history there after every epoch (``tf.train.CheckpointManager``).
            resume: continue from the latest checkpoint in ``checkpoint_dir``, exactly where
                it stopped (epochs, data order, random draws, optimizer state). Without it an
                existing checkpoint raises OutputExistsError rather than being overwritten.
            log_dir: write each epoch's metrics as TensorBoard scalars there.

        Returns:
            The :class:`TrainingHistory` of every epoch run so far.

        Raises:
            InputError: malformed data, labels outside the class range, images outside bounds.
            RobustkitError: the loss became NaN or infinite (the faulty update is not applied).
            WorkerLostError: under a multi-worker strategy, a worker stopped responding.
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
        validation_data = None
        if validation is not None:
            validation_data = Batches(
                validation,
                self.classifier,
                batch_size=EVALUATION_BATCH,
                shuffle=False,
                seed=0,
                name="validation",
            ).first()
        check_outputs(self.classifier, train_batches.first(PROBE_COUNT)[0])
        checkpoints = self._start(checkpoint_dir, resume)
        guard_data = None if self.guard is None else train_batches.first(self.guard_size)
        summaries = (
            EpochSummaries(log_dir) if log_dir and writes_outputs(self._step.strategy) else None
        )
        history = self._state.history()
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
        with naming_lost_workers(self._step.strategy, restart_advice(checkpoint_dir)):
            while epoch < int(epochs):
                logs = self._train_epoch(epoch, train_batches, callback_list)
                stop_reason = self._judge_epoch(epoch, logs, validation_data, guard_data, history)
                history.append(epoch, logs)
                history.stop_reason = stop_reason
                self._state.epoch.assign(epoch + 1)
                self._state.store_history(history)
                if checkpoints is not None:
                    checkpoints.save(epoch + 1)
                if summaries is not None:
                    summaries.write(epoch, logs)
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
        if summaries is not None:
            summaries.close()
        if not self._restore_best(history) and self.averaged is not None:
            self.averaged.put_in()
        callback_list.on_train_end(logs)
        return history

    def _start(self, checkpoint_dir: str | None, resume: bool) -> TrainingCheckpoints | None:
        """Fresh state for this run, then the latest checkpoint's when resuming."""
        if checkpoint_dir is None and resume:
            raise InputError("resume=True needs the checkpoint_dir of the interrupted run.")
        self._state.reset()
        self.early_stopping.reset()
        if self.guard is not None:
            self.guard.reset()
        if checkpoint_dir is None:
            return None
        objects = {
            "model": self.classifier.model,
            "optimizer": self.optimizer,
            "rng": self._step.rng,
            "state": self._state,
            "early_stopping": self.early_stopping,
        }
        if self.guard is not None:
            objects["overfit_guard"] = self.guard
        checkpoints = TrainingCheckpoints(checkpoint_dir, objects, strategy=self._step.strategy)
        if checkpoints.restore(resume):
            logger.info("Resuming at epoch %d.", int(self._state.epoch.numpy()) + 1)
        return checkpoints

    def _train_epoch(
        self, epoch: int, batches: Batches, callback_list: keras.callbacks.CallbackList
    ) -> dict[str, float]:
        """One pass over the training data at this epoch's radius; its logs."""
        eps = float(self.eps_schedule(epoch)) if self.eps_schedule else self.attack.norm.eps
        if not (math.isfinite(eps) and eps >= 0):
            raise InputError(f"eps_schedule gave {eps!r} for epoch {epoch}; need a finite >= 0.")
        callback_list.on_epoch_begin(epoch)
        return self._step.run_epoch(batches.epoch(epoch), eps, epoch, callback_list)

    def _judge_epoch(
        self,
        epoch: int,
        logs: dict[str, float],
        validation_data: tuple[np.ndarray, np.ndarray] | None,
        guard_data: tuple[np.ndarray, np.ndarray] | None,
        history: TrainingHistory,
    ) -> str | None:
        """Validate this epoch's weights and let the guards judge them (``logs`` gains the
        ``val_*`` and ``guard_*`` metrics); why training stops now, or None to carry on."""
        patience_ran_out = False
        if validation_data is not None:
            with averaged_or_own(self.averaged):  # the best epoch's snapshot holds them too
                measured = self.validator.measure(*validation_data)
                logs.update({f"val_{name}": value for name, value in measured.items()})
                patience_ran_out = self.early_stopping.on_epoch_end(epoch, logs)
            history.best_epoch = self.early_stopping.best_epoch
            history.best_val_adv_accuracy = self.early_stopping.best
        guard_stop = None
        if guard_data is not None:
            validators = (self.validator, self._guard_validator)
            guard_stop = judge_guard_batch(self.guard, validators, guard_data, epoch, logs, history)
        if guard_stop is not None:
            return guard_stop
        if patience_ran_out:
            return "patience"
        if getattr(self.classifier.model, "stop_training", False):
            return "callback"
        return None

    def _restore_best(self, history: TrainingHistory) -> bool:
        """End with the weights of the best robust validation epoch (an event when they are
        not the last epoch's); whether they were put back."""
        if not self.early_stopping.on_train_end():
            return False
        best, last = self.early_stopping.best_epoch, history.epoch[-1]
        already = history.events and history.events[-1].get("event") == "restored_best"
        if best != last and not already:
            history.add_event(last, "restored_best", best_epoch=best)
            logger.info(
                "Restored the weights of epoch %d (best robust validation accuracy).", best + 1
            )
        return True
