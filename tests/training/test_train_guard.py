"""The guards on their own: scripted metrics in, exact decisions and exact weights out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.training import OverfitGuard, RobustEarlyStopping


def watched() -> list[tf.Variable]:
    """Two variables standing for a model's weights; epoch e sets them to e and -e."""
    return [tf.Variable(np.zeros(3, np.float32)), tf.Variable(np.zeros((2, 2), np.float32))]


def set_epoch(variables: list[tf.Variable], epoch: float) -> None:
    variables[0].assign(np.full(3, epoch, np.float32))
    variables[1].assign(np.full((2, 2), -epoch, np.float32))


def values(variables: list[tf.Variable]) -> list[np.ndarray]:
    return [v.numpy() for v in variables]


def run_script(
    stopping: RobustEarlyStopping, variables: list[tf.Variable], metrics: list[float]
) -> list[bool]:
    """Feed one metric per epoch (the weights of epoch e set to e); the stop decisions."""
    decisions = []
    for epoch, value in enumerate(metrics):
        set_epoch(variables, epoch)
        decisions.append(stopping.on_epoch_end(epoch, {"val_adv_accuracy": value}))
        if decisions[-1]:
            break
    return decisions


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience() -> None:
    variables = watched()
    stopping = RobustEarlyStopping(variables, patience=2)
    assert stopping.best is None and stopping.best_epoch is None and stopping.best_weights is None
    decisions = run_script(stopping, variables, [0.2, 0.5, 0.5, 0.6, 0.1, 0.0, 0.9])
    # 0.5 at epoch 2 ties epoch 1 (not better) and waits; epoch 3 beats it; epochs 4 and 5 wait,
    # and patience runs out after epoch 5 (epoch 6 never runs).
    assert decisions == [False, False, False, False, False, True]
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (0.6, 3, 2)
    assert stopping.stopped_epoch == 5
    for got, want in zip(
        stopping.best_weights, [np.full(3, 3.0), np.full((2, 2), -3.0)], strict=True
    ):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(variables[0].numpy(), np.full(3, 5.0))  # untouched until...
    assert stopping.on_train_end()  # ...the end puts epoch 3 back
    np.testing.assert_array_equal(variables[0].numpy(), np.full(3, 3.0))
    np.testing.assert_array_equal(variables[1].numpy(), np.full((2, 2), -3.0))


def test_early_stopping_without_patience_or_restoring() -> None:
    variables = watched()
    stopping = RobustEarlyStopping(variables, patience=None, restore_best_weights=False)
    assert run_script(stopping, variables, [0.3, 0.1, math.nan, 0.2]) == [False] * 4
    assert (stopping.best, stopping.best_epoch, stopping.wait) == (0.3, 0, 3)  # NaN: not better
    assert stopping.stopped_epoch is None
    assert not stopping.on_train_end()
    np.testing.assert_array_equal(variables[0].numpy(), np.full(3, 3.0))  # last epoch's


def test_early_stopping_patience_zero_and_min_mode() -> None:
    variables = watched()
    stopping = RobustEarlyStopping(variables, monitor="val_loss", mode="min", patience=0)
    decisions = []
    for epoch, loss in enumerate([1.0, 0.5, 0.7]):
        set_epoch(variables, epoch)
        decisions.append(stopping.on_epoch_end(epoch, {"val_loss": loss}))
    assert decisions == [False, False, True]  # improving epochs never stop; the first worse does
    assert (stopping.best, stopping.best_epoch, stopping.stopped_epoch) == (0.5, 1, 2)
    stopping.on_train_end()
    assert values(variables)[0].tolist() == [1.0, 1.0, 1.0]


def test_early_stopping_reset_and_checkpoint_round_trip(tmp_path) -> None:
    variables = watched()
    stopping = RobustEarlyStopping(variables, patience=3)
    run_script(stopping, variables, [0.4, 0.7, 0.6])
    path = tf.train.Checkpoint(stopping=stopping).write(str(tmp_path / "guard"))

    other_variables = watched()
    restored = RobustEarlyStopping(other_variables, patience=3)
    tf.train.Checkpoint(stopping=restored).read(path).assert_consumed()
    assert (restored.best, restored.best_epoch, restored.wait) == (0.7, 1, 1)
    set_epoch(other_variables, 3)
    assert not restored.on_epoch_end(3, {"val_adv_accuracy": 0.5})
    assert restored.on_epoch_end(4, {"val_adv_accuracy": 0.5})  # the third epoch without gain
    restored.on_train_end()
    np.testing.assert_array_equal(other_variables[0].numpy(), np.full(3, 1.0))

    stopping.reset()
    assert stopping.best is None and stopping.wait == 0 and stopping.stopped_epoch is None
    assert not stopping.on_epoch_end(0, {"val_adv_accuracy": 0.0})  # the first epoch is best


def test_early_stopping_refuses_bad_settings_and_missing_metrics() -> None:
    with pytest.raises(InputError, match="mode"):
        RobustEarlyStopping(watched(), mode="auto")
    with pytest.raises(InputError, match="patience"):
        RobustEarlyStopping(watched(), patience=-1)
    with pytest.raises(InputError, match="lack"):
        RobustEarlyStopping(watched()).on_epoch_end(0, {"adv_accuracy": 0.5})


def guard_script(
    action: str, accuracies: list[tuple[float, float]], max_rollbacks: int = 3
) -> tuple[OverfitGuard, list, list[list[np.ndarray]]]:
    """Epoch e sets the variables to e + 1, then the guard judges (accuracy, training attack's
    accuracy); returns the guard, its decisions and the variables after each judgement."""
    variables = watched()
    guard = OverfitGuard(variables, action, drop=0.2, max_rollbacks=max_rollbacks)
    guard.reset()  # the weights before the first epoch (zeros) are the last good ones
    decisions, after = [], []
    for epoch, (accuracy, own) in enumerate(accuracies):
        set_epoch(variables, epoch + 1)
        decisions.append(guard.on_epoch_end(accuracy, own))
        after.append(values(variables))
    return guard, decisions, after


def test_overfit_guard_stop_puts_the_last_good_epoch_back() -> None:
    guard, decisions, after = guard_script("stop", [(0.8, 0.85), (0.9, 0.9), (0.65, 0.9)])
    assert [d.fired for d in decisions] == [False, False, True]
    assert [d.stop_reason for d in decisions] == [None, None, "overfit_guard"]
    assert [d.reference for d in decisions] == [-1.0, 0.8, 0.9]
    assert decisions[2].reasons == (
        "validation-attack accuracy fell from 0.900 to 0.650",
        "validation-attack accuracy 0.650 but the training attack's 0.900",
    )
    np.testing.assert_array_equal(after[1][0], np.full(3, 2.0))
    np.testing.assert_array_equal(after[2][0], np.full(3, 2.0))  # epoch 2's weights (index 1)
    np.testing.assert_array_equal(after[2][1], np.full((2, 2), -2.0))
    assert guard.reference == 0.9 and guard.firings == 1


def test_overfit_guard_fires_on_a_fooled_training_attack_from_the_start() -> None:
    guard, decisions, after = guard_script("stop", [(0.3, 0.95)])
    assert decisions[0].reasons == (
        "validation-attack accuracy 0.300 but the training attack's 0.950",
    )
    assert decisions[0].stop_reason == "overfit_guard"
    np.testing.assert_array_equal(after[0][0], np.zeros(3))  # the weights before training
    assert guard.reference == -1.0


def test_overfit_guard_rolls_back_and_stops_after_max_rollbacks() -> None:
    script = [(0.9, 0.9), (0.5, 0.9), (0.85, 0.9), (0.4, 0.9), (0.3, 0.9)]
    guard, decisions, after = guard_script("rollback", script, max_rollbacks=2)
    assert [d.fired for d in decisions] == [False, True, False, True, True]
    assert [d.stop_reason for d in decisions] == [None, None, None, None, "overfit_guard_rollbacks"]
    assert [d.reference for d in decisions] == [-1.0, 0.9, 0.9, 0.9, 0.9]
    # each firing restores the weights of the last epoch that did not fire
    assert [float(a[0][0]) for a in after] == [1.0, 1.0, 3.0, 3.0, 3.0]
    assert guard.firings == 3


def test_overfit_guard_monitor_only_records() -> None:
    guard, decisions, after = guard_script("monitor", [(0.9, 0.9), (0.5, 0.9), (0.75, 0.75)])
    assert [d.fired for d in decisions] == [False, True, False]
    assert [d.stop_reason for d in decisions] == [None, None, None]
    assert [d.reference for d in decisions] == [-1.0, 0.9, 0.9]
    assert [float(a[0][0]) for a in after] == [1.0, 2.0, 3.0]  # nothing restored
    assert guard.firings == 1
    with pytest.raises(InputError, match="guard action"):
        OverfitGuard(watched(), "restart")
