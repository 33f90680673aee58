"""The training loop: resume, robust early stopping, the overfitting guard, loud failures."""

from __future__ import annotations

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf
from training_helpers import blobs, linear_model, small_cnn, weights_of

from robustkit.attacks import FGSM, PGD
from robustkit.errors import InputError, OutputExistsError, RobustkitError
from robustkit.optimizers import clipped_noisy
from robustkit.training import AdversarialTrainer, PiecewiseLinear, TrainingHistory, eps_ramp

X, Y = blobs(48, seed=2)
X_VAL, Y_VAL = blobs(24, seed=3)


class Interrupt(Exception):
    """Stands for a kill signal in the middle of an epoch."""


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == self.at:
            raise Interrupt


class WeightsPerEpoch(keras.callbacks.Callback):
    """Records the model's weights at the end of every epoch (after validation and guard)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weights.append(weights_of(self.model))


def bn_trainer(seed: int) -> AdversarialTrainer:
    """PGD training with random starts, BatchNorm, and clipped noisy Adam under a schedule:
    every piece of state a resume must restore."""
    model = small_cnn(seed=seed, batch_norm=True)
    adam = keras.optimizers.Adam(PiecewiseLinear([0, 6, 12], [0.0, 0.02, 0.001]))
    optimizer = clipped_noisy(adam, clip_norm=0.5, noise=0.01, seed=3)
    return AdversarialTrainer(
        model, optimizer, PGD("linf", 0.1, steps=2), eps_schedule=eps_ramp(0.1, 2), seed=7
    )


def test_an_eps_ramp_reuses_one_trace_of_the_training_step() -> None:
    """The radius is a tensor argument of the step: ramping it over epochs does not retrace."""
    trainer = bn_trainer(seed=2)
    history = trainer.fit((X, Y), 3, batch_size=16)
    assert history.history["eps"] == pytest.approx([0.05, 0.1, 0.1])
    assert trainer.traces == 1


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path) -> None:
    options = {"validation": (X_VAL, Y_VAL), "batch_size": 16}
    straight = bn_trainer(seed=1)
    expected = straight.fit((X, Y), 4, checkpoint_dir=str(tmp_path / "a"), **options)

    interrupted = bn_trainer(seed=1)
    with pytest.raises(Interrupt):
        interrupted.fit(
            (X, Y),
            4,
            checkpoint_dir=str(tmp_path / "b"),
            callbacks=[InterruptAt(epoch=2, batch=1)],
            **options,
        )
    with pytest.raises(OutputExistsError):
        bn_trainer(seed=1).fit((X, Y), 4, checkpoint_dir=str(tmp_path / "b"), **options)
    resumed = bn_trainer(seed=99)  # other initial weights: all must come from the checkpoint
    history = resumed.fit((X, Y), 4, checkpoint_dir=str(tmp_path / "b"), resume=True, **options)

    assert history.epoch == expected.epoch == [0, 1, 2, 3]
    for name, values in expected.history.items():
        if name != "seconds":
            np.testing.assert_allclose(history.history[name], values, rtol=1e-6, err_msg=name)
    assert history.best_epoch == expected.best_epoch
    for got, want in zip(
        weights_of(resumed.classifier.model), weights_of(straight.classifier.model), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_robust_early_stopping_restores_best_epoch_weights() -> None:
    model = small_cnn(seed=4)
    # A sane learning rate for three epochs, then one that wrecks the model.
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([9], [0.05, 400.0])
    trainer = AdversarialTrainer(model, keras.optimizers.SGD(schedule), PGD("linf", 0.05, steps=2))
    recorder = WeightsPerEpoch()
    history = trainer.fit(
        (X, Y), 5, validation=(X_VAL, Y_VAL), batch_size=16, shuffle=False, callbacks=[recorder]
    )
    robust = history.history["val_adv_accuracy"]
    best = int(np.argmax(robust))
    assert history.best_epoch == best and robust[best] > robust[-1] + 0.2
    assert history.best_val_adv_accuracy == robust[best]
    assert history.events[-1] == {"epoch": 4, "event": "restored_best", "best_epoch": best}
    for got, want in zip(weights_of(model), recorder.weights[best], strict=True):
        np.testing.assert_array_equal(got, want)
    again = trainer.evaluate(X_VAL, Y_VAL)
    assert again["adv_accuracy"] == robust[best]


def test_patience_stops_training() -> None:
    trainer = AdversarialTrainer(
        small_cnn(seed=4), keras.optimizers.SGD(0.0), PGD("linf", 0.05, steps=1), patience=2
    )
    history = trainer.fit((X, Y), 10, validation=(X_VAL, Y_VAL), batch_size=48)
    assert history.epoch == [0, 1, 2] and history.stop_reason == "patience"
    assert (trainer.early_stopping.best_epoch, trainer.early_stopping.stopped_epoch) == (0, 2)


class Collapse(keras.callbacks.Callback):
    """Negates the last layer at the end of one epoch: a forced catastrophic collapse."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.at, self.epoch = epoch, -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.epoch == self.at and batch == 2:
            dense = self.model.layers[-1]
            dense.set_weights([-w for w in dense.get_weights()])


def robust_linear_model() -> keras.Model:
    """Classifies ``blobs`` by the mean brightness of each class's rows (robust at eps 0.05)."""
    weights = np.zeros((36, 3))
    for k in range(3):
        weights[12 * k : 12 * k + 12, k] = 1.0
    return linear_model(weights, np.zeros(3), (6, 6, 1))


@pytest.mark.parametrize("action", ["stop", "rollback", "monitor"])
def test_overfit_guard_fires_on_forced_collapse(action: str) -> None:
    model = robust_linear_model()
    trainer = AdversarialTrainer(
        model,
        keras.optimizers.SGD(1e-3),
        PGD("linf", 0.05),
        method="fast",
        overfit_guard=action,
        guard_size=32,
        max_rollbacks=0 if action == "rollback" else 3,
    )
    recorder = WeightsPerEpoch()
    history = trainer.fit(
        (X, Y), 4, batch_size=16, shuffle=False, callbacks=[Collapse(epoch=1), recorder]
    )
    guard = history.history["guard_accuracy"]
    assert guard[0] > 0.9 > 0.7 > guard[1]
    event = history.events[0]
    assert (event["event"], event["epoch"], event["action"]) == ("overfit_guard", 1, action)
    if action == "monitor":  # recorded, nothing restored, training goes on
        assert history.history["guard_fired"][:2] == [0.0, 1.0] and len(history.epoch) == 4
        assert history.stop_reason is None
        return
    assert history.history["guard_fired"] == [0.0, 1.0]
    expected_reason = "overfit_guard" if action == "stop" else "overfit_guard_rollbacks"
    assert history.stop_reason == expected_reason
    for got, want in zip(weights_of(model), recorder.weights[0], strict=True):
        np.testing.assert_array_equal(got, want)  # back to the end of epoch 0


@pytest.mark.parametrize("action", ["stop", "monitor"])
def test_overfit_guard_fires_when_the_training_attack_is_fooled_from_the_start(action: str) -> None:
    """A training attack blind to the model (zero loss gradient, so FGSM leaves images as they
    are) while PGD breaks it: robustness never appeared, so there is no drop to see, but the
    gap between the two attacks on the guard batch gives the overfitting away at once."""
    model = robust_linear_model()
    initial = weights_of(model)
    blind = FGSM("linf", 0.4, random_start=False, loss=lambda z, y: 0.0 * tf.reduce_sum(z, -1))
    trainer = AdversarialTrainer(
        model, keras.optimizers.SGD(0.1), blind, method="fast", overfit_guard=action, guard_size=32
    )
    history = trainer.fit((X, Y), 3, batch_size=16, shuffle=False)
    own, guard = (
        history.history["guard_training_attack_accuracy"],
        history.history["guard_accuracy"],
    )
    assert own[0] == pytest.approx(1.0) and guard[0] < 0.5
    event = history.events[0]
    assert (event["event"], event["epoch"], event["action"]) == ("overfit_guard", 0, action)
    assert "training attack" in event["reason"]
    if action == "monitor":  # fires every epoch; the reference is still the best accuracy seen
        assert [e["epoch"] for e in history.events] == [0, 1, 2] and history.stop_reason is None
        for event in history.events:
            assert event["reference"] == max([-1.0, *guard[: event["epoch"]]])
        return
    assert history.stop_reason == "overfit_guard"
    for got, want in zip(weights_of(model), initial, strict=True):
        np.testing.assert_array_equal(got, want)  # back to the weights before the first epoch


class Diverge(keras.callbacks.Callback):
    """After the first epoch, blows the last layer up so that the logits overflow."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            dense = self.model.layers[-1]
            dense.set_weights([np.full_like(w, 3e38) for w in dense.get_weights()])


def test_nan_loss_fails_loudly_without_applying_the_update() -> None:
    model = small_cnn(seed=6)
    trainer = AdversarialTrainer(model, keras.optimizers.SGD(0.1), PGD("linf", 0.05, steps=1))
    recorder = WeightsPerEpoch()
    with pytest.raises(RobustkitError, match=r"NaN or infinite \(epoch 2, batch 1\)") as raised:
        trainer.fit((X, Y), 3, batch_size=16, callbacks=[Diverge(), recorder])
    assert not isinstance(raised.value, InputError)
    for got, want in zip(weights_of(model), recorder.weights[0], strict=True):
        np.testing.assert_array_equal(got, want)  # the faulty update was not applied


def test_bad_labels_images_and_outputs_fail_before_training() -> None:
    trainer = AdversarialTrainer(small_cnn(), keras.optimizers.SGD(0.1), PGD("linf", 0.1))
    with pytest.raises(InputError, match="classes"):
        trainer.fit((X, np.where(Y == 2, 3, Y)), 1)
    bad_labels = tf.data.Dataset.from_tensor_slices((X, Y - 1)).batch(16)
    with pytest.raises(InputError, match="label outside the class range"):
        trainer.fit(bad_labels, 1)
    bad_pixels = tf.data.Dataset.from_tensor_slices((X * 255, Y)).batch(16)
    with pytest.raises(InputError, match="outside the classifier bounds"):
        trainer.fit(bad_pixels, 1)
    with pytest.raises(InputError, match="Batch an unbatched"):
        trainer.fit(tf.data.Dataset.from_tensor_slices((X, Y)), 1)
    sigmoid = keras.Sequential(
        [keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "sigmoid")]
    )
    with pytest.raises(InputError, match="neither logits nor softmax"):
        AdversarialTrainer(sigmoid, keras.optimizers.SGD(0.1), PGD("linf", 0.1))
    with pytest.raises(InputError, match="random_start"):
        AdversarialTrainer(
            small_cnn(), keras.optimizers.SGD(0.1), PGD("linf", 0.1, random_start=False), "trades"
        )


def test_one_trace_for_all_batch_sizes_history_and_tensorboard(tmp_path) -> None:
    trainer = AdversarialTrainer(
        small_cnn(seed=8), keras.optimizers.Adam(0.01), PGD("linf", 0.1, steps=2), method="mixed"
    )
    history = trainer.fit((X, Y), 2, batch_size=20, log_dir=str(tmp_path))  # 20, 20, 8
    assert trainer.traces == 1
    assert history.epoch == [0, 1] and history.stop_reason is None
    restored = TrainingHistory.from_json(history.to_json())
    assert restored.history["adv_loss"] == history.history["adv_loss"]
    logged = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                logged[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    assert logged[("adv_accuracy", 1)] == pytest.approx(history.history["adv_accuracy"][1])
    assert logged[("clean_loss", 0)] == pytest.approx(history.history["clean_loss"][0])


def test_resume_restores_the_guards_state(tmp_path) -> None:
    """The early stopping's best and wait and the guard's reference come back from the
    checkpoint: robust accuracy stalls at 0 from epoch 0, so patience 2 runs out after epoch 2
    in the resumed run too (a fresh count would start again at epoch 2)."""

    def trainer(seed: int) -> AdversarialTrainer:
        return AdversarialTrainer(
            small_cnn(seed=seed),
            keras.optimizers.SGD(0.05),
            PGD("linf", 0.1),
            method="fast",
            overfit_guard="monitor",
            guard_size=32,
            patience=2,
            seed=1,
        )

    options = {"validation": (X_VAL, Y_VAL), "batch_size": 16}
    straight = trainer(1)
    expected = straight.fit((X, Y), 4, **options)
    assert expected.epoch == [0, 1, 2] and expected.stop_reason == "patience"
    trainer(1).fit((X, Y), 2, checkpoint_dir=str(tmp_path), **options)
    resumed = trainer(9)
    history = resumed.fit((X, Y), 4, checkpoint_dir=str(tmp_path), resume=True, **options)
    assert history.epoch == [0, 1, 2] and history.stop_reason == "patience"
    for name in ("guard_accuracy", "guard_fired", "val_adv_accuracy"):
        assert history.history[name] == expected.history[name], name
    assert resumed.guard.reference == straight.guard.reference
    assert resumed.guard.firings == straight.guard.firings
    stopping, reference = resumed.early_stopping, straight.early_stopping
    assert (stopping.best, stopping.best_epoch, stopping.wait, stopping.stopped_epoch) == (
        reference.best,
        reference.best_epoch,
        reference.wait,
        2,
    )
