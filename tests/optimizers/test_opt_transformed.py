"""The Transformed optimizer: exact steps, order, schedule, freezing, fit, custom loops, saving."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from opt_helpers import compile_model, data, small_model, values

from robustkit import InputError
from robustkit import optimizers as rko


@pytest.mark.parametrize("setting", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_inner_optimizer_that_clips_is_refused_with_the_reason(setting) -> None:
    with pytest.raises(InputError, match=f"{setting}=1.0.*clipping the noise away"):
        rko.Transformed(keras.optimizers.SGD(0.1, **{setting: 1.0}), [rko.gaussian_noise(0.1)])


def test_bad_inner_or_transforms_are_refused() -> None:
    with pytest.raises(InputError, match="Keras 3 optimizer"):
        rko.Transformed("adam")
    with pytest.raises(InputError, match="GradientTransform"):
        rko.Transformed(keras.optimizers.SGD(0.1), [lambda g: g])


def test_one_step_is_sgd_on_the_numpy_clipped_gradient() -> None:
    start = [np.array([1.0, 2.0, -1.0], np.float32), np.array([[0.5, 0.0]], np.float32)]
    grads = [np.array([3.0, 0.0, 0.0], np.float32), np.array([[0.0, 4.0]], np.float32)]  # norm 5
    variables = [tf.Variable(v) for v in start]
    optimizer = rko.Transformed(keras.optimizers.SGD(0.1), [rko.clip_by_global_norm(1.0)])
    optimizer.apply_gradients(zip([tf.constant(g) for g in grads], variables, strict=True))
    for variable, v0, g in zip(variables, start, grads, strict=True):
        np.testing.assert_allclose(variable.numpy(), v0 - 0.1 * g / 5.0, atol=1e-6)
    assert int(optimizer.iterations) == 1


def update_norm(transforms: list) -> float:
    variable = tf.Variable(tf.zeros([1000]))
    optimizer = rko.Transformed(keras.optimizers.SGD(1.0), transforms, seed=0)
    optimizer.apply([tf.fill([1000], 100.0)], [variable])
    return float(tf.norm(variable))


def test_clipping_before_noise_keeps_the_noise() -> None:
    clip, noise = rko.clip_by_global_norm(1e-3), rko.gaussian_noise(0.1)
    np.testing.assert_allclose(update_norm([clip, noise]), 0.1 * np.sqrt(1000), rtol=0.1)
    assert update_norm([noise, clip]) <= 1e-3 * (1 + 1e-6)  # the other order clips it away


def noisy_steps(seed: int, steps: int = 3) -> list[np.ndarray]:
    """Weight changes of SGD(1) on zero gradients: minus the noise of each step."""
    variable = tf.Variable(tf.zeros([100_000]))
    optimizer = rko.Transformed(
        keras.optimizers.SGD(1.0), [rko.annealed_gaussian_noise(0.5)], seed=seed
    )
    changes = []
    for _ in range(steps):
        before = variable.numpy()
        optimizer.apply([tf.zeros([100_000])], [variable])
        changes.append(variable.numpy() - before)
    return changes


def test_noise_through_the_optimizer_follows_the_schedule_and_the_seed() -> None:
    changes = noisy_steps(seed=5)
    for step, change in enumerate(changes):
        expected = np.sqrt(0.5 / (1 + step) ** 0.55)
        assert abs(change.mean()) < 5 * expected / np.sqrt(change.size)
        np.testing.assert_allclose(change.std(), expected, rtol=0.02)
    again = noisy_steps(seed=5)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(changes, again, strict=True))
    other = noisy_steps(seed=6)
    assert all(np.mean(a == b) < 1e-3 for a, b in zip(changes, other, strict=True))


def test_frozen_weights_stay_bit_identical_under_adamw_momentum_decay_and_noise() -> None:
    rng = np.random.default_rng(1)
    variable = tf.Variable(rng.uniform(-1, 1, [40, 50]).astype(np.float32))
    optimizer = rko.Transformed(
        keras.optimizers.AdamW(0.05, weight_decay=0.5),
        [rko.freeze_small_weights(0.2), rko.gaussian_noise(0.05)],
        seed=0,
    )

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [variable])

    frozen_at_start = np.abs(variable.numpy()) < 0.2
    start = variable.numpy()
    newly_frozen = 0
    for _ in range(6):
        before = variable.numpy()
        frozen = np.abs(before) < 0.2
        step(tf.constant(rng.normal(size=[40, 50]).astype(np.float32)))
        after = variable.numpy()
        assert after[frozen].tobytes() == before[frozen].tobytes()
        assert np.all(after[~frozen] != before[~frozen])
        newly_frozen += int(np.sum(frozen & ~frozen_at_start))
    assert variable.numpy()[frozen_at_start].tobytes() == start[frozen_at_start].tobytes()
    assert newly_frozen > 0  # weights decayed under the threshold were frozen from then on


def test_freezing_with_the_inner_ema_is_refused() -> None:
    inner = keras.optimizers.Adam(0.01, use_ema=True)
    with pytest.raises(InputError, match="use_ema=True"):
        rko.Transformed(inner, [rko.freeze_small_weights(0.1)])


def test_check_numerics_names_the_model_variable() -> None:
    model = small_model()
    optimizer = rko.Transformed(keras.optimizers.Adam(), [rko.check_numerics()])
    variables = model.trainable_variables
    grads = [tf.zeros_like(v) for v in variables]
    grads[2] = tf.tensor_scatter_nd_update(grads[2], [[0, 0]], [np.nan])

    @tf.function
    def step(grads):
        optimizer.apply(grads, variables)

    expected = re.escape(rko.NON_FINITE_MESSAGE)
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected) as caught:
        step(grads)
    assert variables[2].path in str(caught.value)
    assert variables[0].path not in str(caught.value)


def test_fit_with_the_debug_record_in_the_logs() -> None:
    x, y = data()
    optimizer = rko.clipped_noisy(keras.optimizers.Adam(1e-2), 0.1, noise=0.01, seed=0, debug=True)
    history = (
        compile_model(small_model(), optimizer)
        .fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[rko.DebugRecordLogger()])
        .history
    )
    assert np.all(np.isfinite(history["loss"]))
    assert all(len(history[f"opt_{q}"]) == 2 for q in rko.DEBUG_QUANTITIES)
    assert max(history["opt_clipped_grad_norm"]) <= 0.1 * (1 + 1e-6)
    assert min(history["opt_grad_norm"]) > 0.1  # this model's gradients are clipped
    np.testing.assert_allclose(history["opt_noise_std"], 0.01, rtol=1e-6)
    assert int(optimizer.iterations) == 6 == int(optimizer.transform_step)


def test_debug_logger_needs_a_debug_optimizer() -> None:
    x, y = data(8)
    model = compile_model(small_model(), rko.clipped_noisy(keras.optimizers.SGD(0.1)))
    with pytest.raises(InputError, match="debug=True"):
        model.fit(x, y, verbose=0, callbacks=[rko.DebugRecordLogger()])


def read_scalars(directory) -> dict[str, list[float]]:
    scalars: dict[str, list[float]] = {}
    for path in tf.io.gfile.glob(f"{directory}/events*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return scalars


def test_debug_record_values_and_summaries(tmp_path) -> None:
    start = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    gradient = np.array([3.0, 4.0, 0.0, 0.0], np.float32)  # norm 5
    variable = tf.Variable(start)
    optimizer = rko.Transformed(
        keras.optimizers.SGD(0.1),
        [rko.clip_by_norm(2.0), rko.gaussian_noise(0.25)],
        seed=1,
        debug=True,
    )
    writer = tf.summary.create_file_writer(str(tmp_path))

    @tf.function
    def step(gradient):
        optimizer.apply([gradient], [variable])

    with writer.as_default():
        step(tf.constant(gradient))
    writer.flush()
    results = {q: float(m.result()) for q, m in optimizer.debug_metrics.items()}
    expected = {
        "grad_norm": 5.0,
        "clipped_grad_norm": 2.0,
        "noise_std": 0.25,
        "update_norm": float(np.linalg.norm(variable.numpy() - start)),
    }
    for quantity, value in expected.items():
        np.testing.assert_allclose(results[quantity], value, rtol=1e-6)
    scalars = read_scalars(tmp_path)
    for quantity, value in expected.items():
        np.testing.assert_allclose(scalars[f"robustkit/{quantity}"], [value], rtol=1e-6)


def test_custom_tf_function_loop_does_not_retrace() -> None:
    x, y = data()
    model = small_model()
    optimizer = rko.clipped_noisy(
        keras.optimizers.AdamW(1e-3), 1.0, noise=rko.annealed_gaussian_noise(0.01), seed=0
    )
    # Built eagerly: a tf.function that creates variables traces twice (Keras' own optimizers too).
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    for start in range(0, 48, 12):
        train_step(tf.constant(x[start : start + 12]), tf.constant(y[start : start + 12]))
    assert train_step.experimental_get_tracing_count() == 1
    assert int(optimizer.iterations) == 4 == int(optimizer.transform_step)


def test_save_and_load_restore_config_state_and_the_next_step(tmp_path) -> None:
    x, y = data()
    optimizer = rko.Transformed(
        keras.optimizers.Adam(1e-2),
        [rko.clip_by_global_norm(0.5), rko.annealed_gaussian_noise(0.05)],
        seed=3,
    )
    model = compile_model(small_model(), optimizer)
    model.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")

    restored = loaded.optimizer
    assert isinstance(restored, rko.Transformed)
    assert restored.get_config() == optimizer.get_config()
    assert (
        len(restored.variables) == len(optimizer.variables) == 4 + 2 + 2 * 4
    )  # own, then Adam: iteration, lr, moments
    for saved, back in zip(optimizer.variables, restored.variables, strict=True):
        assert np.array_equal(back.numpy(), saved.numpy())  # iterations, moments, noise state
    assert int(restored.iterations) == 2 == int(restored.transform_step)

    for resumed in (model, loaded):
        resumed.fit(x[32:], y[32:], batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(values(model.weights), values(loaded.weights), strict=True):
        assert a.tobytes() == b.tobytes()


def test_optimizer_alone_serializes() -> None:
    optimizer = rko.clipped_noisy(keras.optimizers.SGD(0.2, momentum=0.9), 2.0, noise=0.1, seed=9)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert again.get_config() == optimizer.get_config()
    assert [type(t) for t in again.transforms] == [rko.ClipByGlobalNorm, rko.GaussianNoise]
    assert isinstance(again.inner_optimizer, keras.optimizers.SGD)
    assert again.inner_optimizer.momentum == 0.9


@pytest.mark.parametrize(
    "make_inner",
    [
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        lambda: keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.9),
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=2),
    ],
    ids=["adamw", "ema", "accumulation"],
)
def test_an_empty_chain_is_the_inner_optimizer_bit_for_bit(make_inner) -> None:
    """Weight decay, EMA and accumulation are the inner optimizer's Keras built-ins."""
    rng = np.random.default_rng(2)
    start = rng.normal(size=[5, 4]).astype(np.float32)
    grads = [tf.constant(rng.normal(size=[5, 4]).astype(np.float32)) for _ in range(4)]
    plain, wrapped = tf.Variable(start), tf.Variable(start)
    inner, transformed = make_inner(), rko.Transformed(make_inner(), [])
    for gradient in grads:
        inner.apply([gradient], [plain])
        transformed.apply([gradient], [wrapped])
    inner.finalize_variable_values([plain])
    transformed.finalize_variable_values([wrapped])
    assert plain.numpy().tobytes() == wrapped.numpy().tobytes()
    assert not np.array_equal(plain.numpy(), start)


def test_learning_rate_and_iterations_belong_to_the_inner_optimizer() -> None:
    inner = keras.optimizers.SGD(0.1)
    optimizer = rko.Transformed(inner, [rko.clip_by_value(1.0)])
    optimizer.learning_rate = 0.05
    np.testing.assert_allclose(float(inner.learning_rate), 0.05)
    optimizer.apply([tf.ones([2])], [tf.Variable(tf.zeros([2]))])
    assert optimizer.iterations is inner.iterations
    assert int(inner.iterations) == 1


def test_clipped_noisy_chains_clip_then_noise() -> None:
    noise = rko.annealed_gaussian_noise(0.3)
    optimizer = rko.clipped_noisy(keras.optimizers.SGD(0.1), clip_norm=2.0, noise=noise)
    clip, added = optimizer.transforms
    assert isinstance(clip, rko.ClipByGlobalNorm) and clip.clip_norm == 2.0
    assert added is noise
    assert rko.clipped_noisy(keras.optimizers.SGD(0.1), clip_norm=None).transforms == []
    assert isinstance(optimizer.seed, int)  # drawn when not given; kept in the config
