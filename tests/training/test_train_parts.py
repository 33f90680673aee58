"""Schedules, history, batching, checkpoints and the progress callback (no training)."""

from __future__ import annotations

import io
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from training_helpers import blobs, small_cnn

from robustkit.errors import InputError, OutputExistsError
from robustkit.models import Classifier
from robustkit.training import PiecewiseLinear, ProgressLogger, TrainingHistory, eps_ramp
from robustkit.training.checkpoints import TrainingCheckpoints
from robustkit.training.data import Batches


def test_eps_ramp_rises_linearly_then_stays() -> None:
    schedule = eps_ramp(0.3, 3, start=0.0)
    assert [schedule(e) for e in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    with pytest.raises(InputError):
        eps_ramp(0.3, 0)
    with pytest.raises(InputError):
        eps_ramp(0.3, 2, start=0.5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 100), min_size=2, max_size=5, unique=True), st.integers(-5, 120))
def test_piecewise_linear_matches_numpy_interp(points: list[int], step: int) -> None:
    boundaries = sorted(points)
    values = [float((3 * b) % 7) for b in boundaries]
    schedule = PiecewiseLinear(boundaries, values)
    np.testing.assert_allclose(
        float(schedule(step)), np.interp(step, boundaries, values), rtol=1e-6, atol=1e-6
    )
    restored = PiecewiseLinear.from_config(schedule.get_config())
    assert float(restored(step)) == float(schedule(step))


def test_piecewise_linear_drives_a_keras_optimizer() -> None:
    optimizer = keras.optimizers.SGD(PiecewiseLinear([0, 10], [0.0, 1.0]))
    optimizer.build([keras.Variable(1.0)])
    optimizer.iterations.assign(4)
    assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(0.4)


def test_history_appends_new_metrics_and_round_trips_json() -> None:
    history = TrainingHistory()
    history.append(0, {"loss": 1.0})
    history.append(1, {"loss": 0.5, "val_adv_accuracy": 0.7})
    history.add_event(1, "overfit_guard", action="stop")
    assert history.history["loss"] == [1.0, 0.5]
    assert math.isnan(history.history["val_adv_accuracy"][0])
    restored = TrainingHistory.from_json(history.to_json())
    assert restored.epoch == [0, 1] and restored.events == history.events
    assert math.isnan(restored.history["val_adv_accuracy"][0])
    assert restored.history["val_adv_accuracy"][1] == 0.7


def test_array_batches_are_a_permutation_fixed_by_seed_and_epoch() -> None:
    x, y = blobs(10)
    classifier = Classifier(small_cnn())

    def labels(seed: int, epoch: int) -> list[int]:
        batches = Batches((x, y), classifier, batch_size=4, shuffle=True, seed=seed, name="t")
        return [int(v) for _, batch_y in batches.epoch(epoch) for v in batch_y.numpy()]

    batches = Batches((x, y), classifier, batch_size=4, shuffle=True, seed=0, name="t")
    sizes = [int(batch_x.shape[0]) for batch_x, _ in batches.epoch(0)]
    assert sizes == [4, 4, 2] and batches.steps == 3
    assert sorted(labels(0, 0)) == sorted(y.tolist())
    assert labels(0, 1) == labels(0, 1) != labels(0, 0)
    assert labels(1, 0) != labels(0, 0)


def test_progress_logger_writes_steps_and_an_epoch_summary() -> None:
    stream = io.StringIO()
    logger = ProgressLogger(stream=stream, every=2)
    logger.set_params({"epochs": 3, "steps": 4})
    logger.on_epoch_begin(1)
    for batch in range(4):
        logger.on_train_batch_end(batch)
    logger.on_epoch_end(1, {"loss": 0.25, "adv_accuracy": 0.5, "not_shown": 1.0})
    text = stream.getvalue()
    assert "\repoch 2/3  step 2/4" in text and "\repoch 2/3  step 4/4" in text
    summary = text.rsplit("\r", 1)[-1]
    assert summary.startswith("epoch 2/3") and "loss 0.25  adv_accuracy 0.5" in summary
    assert "not_shown" not in summary and summary.endswith("\n")


def test_checkpoints_resume_refuse_to_overwrite_and_refuse_a_mismatch(tmp_path) -> None:
    state = tf.Module()
    state.values = tf.Variable([1.0, 2.0, 3.0])
    checkpoints = TrainingCheckpoints(str(tmp_path), {"state": state})
    assert checkpoints.latest is None and not checkpoints.restore(resume=True)
    path = checkpoints.save(4)
    assert path.endswith("ckpt-4") and checkpoints.latest == path
    state.values.assign([0.0, 0.0, 0.0])
    with pytest.raises(OutputExistsError, match="resume=True"):
        TrainingCheckpoints(str(tmp_path), {"state": state}).restore(resume=False)
    assert state.values.numpy().tolist() == [0.0, 0.0, 0.0]  # nothing loaded or overwritten
    assert TrainingCheckpoints(str(tmp_path), {"state": state}).restore(resume=True)
    assert state.values.numpy().tolist() == [1.0, 2.0, 3.0]
    other = tf.Module()
    other.values = tf.Variable([1.0, 2.0])
    with pytest.raises(InputError, match="does not match"):
        TrainingCheckpoints(str(tmp_path), {"state": other}).restore(resume=True)
