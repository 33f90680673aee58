"""Transform state kept by the Transformed optimizer: saved and resumed bit for bit (checkpoint
and keras.saving), serialized in the config, and usable in fit with clipping-then-noise chains."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from opt_helpers import compile_model, data, small_model, values

from robustkit import InputError
from robustkit import optimizers as rko


def stateful_chain() -> list[rko.GradientTransform]:
    return [
        rko.check_numerics(),
        rko.scale_by_pattern([("*/kernel", 0.5)]),  # paths differ by model: kernels
        rko.adaptive_grad_clip(0.05),
        rko.clip_by_running_quantile(0.7, window=3),
        rko.top_k_sparsify(0.3),
        rko.annealed_gaussian_noise(0.01),
    ]


def train_steps(model, optimizer, batches, jit_compile: bool = False) -> None:
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, variables), variables)

    for x, y in batches:
        step(tf.constant(x), tf.constant(y))


def fresh(seed: int) -> tuple[keras.Model, rko.Transformed]:
    model = small_model(seed)
    optimizer = rko.Transformed(keras.optimizers.AdamW(1e-2), stateful_chain(), seed=5)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_checkpoint_mid_training_resumes_bit_identically(tmp_path) -> None:
    x, y = data(64)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
    model, optimizer = fresh(0)
    train_steps(model, optimizer, batches[:4])
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    # The state is not trivial: the norm window has wrapped, remainders are carried.
    (_, _, _, (norms, count), remainders, _) = optimizer.transform_states()
    assert int(count) == 4 and np.all(norms.numpy() > 0)
    assert all(np.count_nonzero(r.numpy()) > 0 for r in remainders)
    train_steps(model, optimizer, batches[4:])

    resumed_model, resumed = fresh(1)  # other initial weights, fresh state
    tf.train.Checkpoint(model=resumed_model, optimizer=resumed).read(path).assert_consumed()
    train_steps(resumed_model, resumed, batches[4:])
    for a, b in zip(values(model.weights), values(resumed_model.weights), strict=True):
        assert a.tobytes() == b.tobytes()
    assert len(resumed.variables) == len(optimizer.variables)
    for a, b in zip(values(optimizer.variables), values(resumed.variables), strict=True):
        assert a.tobytes() == b.tobytes()

    # Without the transforms' state the same steps end elsewhere.
    model_again, optimizer_again = fresh(0)
    train_steps(model_again, optimizer_again, batches[:4])
    for variable in optimizer_again.variables[2:6]:  # the quantile window and the remainders
        variable.assign(tf.zeros_like(variable))
    train_steps(model_again, optimizer_again, batches[4:])
    assert any(
        a.tobytes() != b.tobytes()
        for a, b in zip(values(model.weights), values(model_again.weights), strict=True)
    )


def test_keras_save_and_load_mid_fit_resumes_bit_identically(tmp_path) -> None:
    x, y = data()
    optimizer = rko.Transformed(keras.optimizers.Adam(1e-2), stateful_chain(), seed=3)
    model = compile_model(small_model(), optimizer)
    model.fit(x[:32], y[:32], batch_size=8, epochs=1, verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")

    restored = loaded.optimizer
    assert isinstance(restored, rko.Transformed)
    assert restored.get_config() == optimizer.get_config()
    assert [type(t) for t in restored.transforms] == [type(t) for t in optimizer.transforms]
    # own: iteration, rate, step, seed; quantile window and count; 4 remainders; Adam's 2 + 2 x 4
    assert len(restored.variables) == len(optimizer.variables) == 4 + 2 + 4 + 2 + 2 * 4
    for saved, back in zip(optimizer.variables, restored.variables, strict=True):
        assert np.array_equal(back.numpy(), saved.numpy())
    assert int(restored.transform_states()[3][1]) == 4

    for resumed in (model, loaded):
        resumed.fit(x[32:], y[32:], batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(values(model.weights), values(loaded.weights), strict=True):
        assert a.tobytes() == b.tobytes()


def test_the_whole_chain_serializes_with_the_optimizer() -> None:
    optimizer = rko.Transformed(keras.optimizers.SGD(0.1, momentum=0.9), stateful_chain(), seed=1)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer))
    assert again.get_config() == optimizer.get_config()
    assert [t.get_config() for t in again.transforms] == [
        t.get_config() for t in optimizer.transforms
    ]


def test_stateful_chains_in_fit_with_the_debug_record() -> None:
    x, y = data()
    chain = [
        rko.adaptive_grad_clip(0.01),
        rko.clip_by_running_quantile(0.5, window=4),
        rko.gaussian_noise(0.01),
    ]
    optimizer = rko.Transformed(keras.optimizers.Adam(1e-2), chain, seed=0, debug=True)
    history = (
        compile_model(small_model(), optimizer)
        .fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[rko.DebugRecordLogger()])
        .history
    )
    assert np.all(np.isfinite(history["loss"]))
    np.testing.assert_allclose(history["opt_noise_std"], 0.01, rtol=1e-6)
    assert all(
        c < g
        for c, g in zip(history["opt_clipped_grad_norm"], history["opt_grad_norm"], strict=True)
    )
    assert int(optimizer.transform_step) == 12 == int(optimizer.transform_states()[1][1])


def test_a_stateful_chain_needs_every_gradient() -> None:
    variables = [tf.Variable(tf.zeros([3])), tf.Variable(tf.zeros([2]))]
    stateless = rko.Transformed(keras.optimizers.SGD(0.1), [rko.clip_by_global_norm(1.0)])
    stateless.build(variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns of the missing gradient
        stateless.apply([tf.ones([3]), None], variables)
    np.testing.assert_allclose(variables[0].numpy(), -0.1 / np.sqrt(3))

    stateful = rko.Transformed(keras.optimizers.SGD(0.1), [rko.top_k_sparsify(0.5)])
    stateful.build(variables)
    with warnings.catch_warnings(), pytest.raises(InputError, match="gradients for 1 variables"):
        warnings.simplefilter("ignore")
        stateful.apply([tf.ones([3]), None], variables)


def test_the_new_transforms_compile_with_xla() -> None:
    """Same weights with and without jit_compile (no noise: XLA draws other stateless bytes)."""
    x, y = data(32)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]
    left_out = rko.CheckNumerics | rko.AnnealedGaussianNoise  # CheckNumerics does not compile
    chain = [t for t in stateful_chain() if not isinstance(t, left_out)]
    chain.append(rko.freeze_small_weights(0.01))
    results = []
    for jit_compile in (False, True):
        model = small_model(0)
        optimizer = rko.Transformed(keras.optimizers.AdamW(1e-2), chain, seed=5)
        optimizer.build(model.trainable_variables)
        train_steps(model, optimizer, batches, jit_compile)
        results.append(values(model.weights))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
