"""Weight averaging (the optimizer's EMA) in the trainer, and deterministic training from one
process to the next."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from training_helpers import blobs, small_cnn, weights_of

from robustkit.attacks import PGD
from robustkit.errors import InputError
from robustkit.optimizers import clipped_noisy
from robustkit.training import AdversarialTrainer

X, Y = blobs(48, seed=2)
X_VAL, Y_VAL = blobs(24, seed=3)
MOMENTUM = 0.8
DETERMINISTIC_WORKER = Path(__file__).with_name("training_deterministic_worker.py")


class WeightsPerStep(keras.callbacks.Callback):
    """The model's trainable weights after every optimizer step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps.append([v.numpy() for v in self.model.trainable_variables])


class Interrupt(Exception):
    """Stands for a kill signal in the middle of an epoch."""


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at, self.epoch = (epoch, batch), -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == self.at:
            raise Interrupt


def trainer_for(use_ema: bool, ema_weights: bool, seed: int = 4, **options) -> AdversarialTrainer:
    optimizer = keras.optimizers.Adam(0.02, use_ema=use_ema, ema_momentum=MOMENTUM)
    return AdversarialTrainer(
        small_cnn(seed=seed),
        optimizer,
        PGD("linf", 0.1, steps=2),
        ema_weights=ema_weights,
        seed=1,
        **options,
    )


def numpy_ema(steps: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Keras' EMA of the weights after each step: a_1 = w_1, a_t = m·a_{t-1} + (1 - m)·w_t."""
    average = [w.astype(np.float64) for w in steps[0]]
    for weights in steps[1:]:
        average = [MOMENTUM * a + (1 - MOMENTUM) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_ema_weights_are_the_validated_and_final_ones() -> None:
    """The averages are what validation measures and what the model holds at the end; the raw
    trajectory (which the attack and the updates see) is that of training without them."""
    options = {"validation": (X_VAL, Y_VAL), "batch_size": 16}
    averaged = trainer_for(use_ema=True, ema_weights=True, restore_best=False)
    history = averaged.fit((X, Y), 2, **options)
    raw = trainer_for(use_ema=False, ema_weights=False, restore_best=False)
    recorder = WeightsPerStep()
    raw_history = raw.fit((X, Y), 2, callbacks=[recorder], **options)

    assert len(recorder.steps) == 6
    final = [v.numpy() for v in averaged.classifier.model.trainable_variables]
    for got, want in zip(final, numpy_ema(recorder.steps), strict=True):
        np.testing.assert_allclose(got, want, atol=2e-6)
    for name in ("loss", "adv_loss", "grad_norm"):  # training itself is untouched by averaging
        assert history.history[name] == raw_history.history[name], name
    measured = averaged.evaluate(X_VAL, Y_VAL)
    assert measured["clean_loss"] == history.history["val_clean_loss"][-1]
    assert measured["adv_loss"] == history.history["val_adv_loss"][-1]
    assert abs(measured["clean_loss"] - raw_history.history["val_clean_loss"][-1]) > 1e-4


def test_ema_best_epoch_is_restored_and_not_asking_keeps_the_raw_weights() -> None:
    averaged = trainer_for(use_ema=True, ema_weights=True)
    history = averaged.fit((X, Y), 3, validation=(X_VAL, Y_VAL), batch_size=16)
    best = history.best_epoch
    measured = averaged.evaluate(X_VAL, Y_VAL)
    assert measured["adv_accuracy"] == history.history["val_adv_accuracy"][best]
    assert measured["clean_loss"] == history.history["val_clean_loss"][best]

    kept = trainer_for(use_ema=True, ema_weights=False)
    kept.fit((X, Y), 2, batch_size=16)
    plain = trainer_for(use_ema=False, ema_weights=False)
    plain.fit((X, Y), 2, batch_size=16)
    for got, want in zip(
        weights_of(kept.classifier.model), weights_of(plain.classifier.model), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_resume_keeps_the_averages_exactly(tmp_path) -> None:
    options = {"validation": (X_VAL, Y_VAL), "batch_size": 16}
    straight = trainer_for(use_ema=True, ema_weights=True)
    straight.fit((X, Y), 3, checkpoint_dir=str(tmp_path / "a"), **options)

    interrupted = trainer_for(use_ema=True, ema_weights=True)
    with pytest.raises(Interrupt):
        interrupted.fit(
            (X, Y),
            3,
            checkpoint_dir=str(tmp_path / "b"),
            callbacks=[InterruptAt(epoch=1, batch=1)],
            **options,
        )
    resumed = trainer_for(use_ema=True, ema_weights=True, seed=99)  # all from the checkpoint
    resumed.fit((X, Y), 3, checkpoint_dir=str(tmp_path / "b"), resume=True, **options)
    for got, want in zip(
        weights_of(resumed.classifier.model), weights_of(straight.classifier.model), strict=True
    ):
        np.testing.assert_array_equal(got, want)


def test_ema_weights_need_the_optimizer_average_and_reach_through_a_wrapper() -> None:
    attack = PGD("linf", 0.1, steps=1)
    with pytest.raises(InputError, match="use_ema=True"):
        AdversarialTrainer(small_cnn(), keras.optimizers.Adam(0.01), attack, ema_weights=True)
    overwriting = keras.optimizers.Adam(0.01, use_ema=True, ema_overwrite_frequency=2)
    with pytest.raises(InputError, match="ema_overwrite_frequency"):
        AdversarialTrainer(small_cnn(), overwriting, attack, ema_weights=True)

    inner = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    model = small_cnn(seed=6)
    trainer = AdversarialTrainer(
        model, clipped_noisy(inner, clip_norm=1.0, noise=0.0), attack, ema_weights=True
    )
    recorder = WeightsPerStep()
    trainer.fit((X[:32], Y[:32]), 1, batch_size=16, callbacks=[recorder])
    first, second = recorder.steps
    for got, a, b in zip(model.trainable_variables, first, second, strict=True):
        np.testing.assert_allclose(got.numpy(), 0.5 * a + 0.5 * b, atol=1e-6)


def test_deterministic_training_gives_the_same_weights_in_two_fresh_processes(run_fresh) -> None:
    first, second = run_fresh(DETERMINISTIC_WORKER), run_fresh(DETERMINISTIC_WORKER)
    assert first["op_determinism"] and second["op_determinism"]
    assert first["weight_change"] > 0.01  # training moved the weights...
    assert first["digest"] == second["digest"]  # ...to the same bytes in both processes
