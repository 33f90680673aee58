"""Adaptive gradient clipping and per-group rates against NumPy references over several steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from opt_helpers import key

from robustkit import InputError
from robustkit import optimizers as rko

# Shapes of the NFNets conventions: Dense kernel [in, out], bias, Conv2D kernel HWIO, a kernel
# with one input ([1, out]: one unit, as a vector), a scalar.
SHAPES = [(6, 8), (8,), (3, 3, 2, 4), (1, 5), ()]


def np_unitwise_norm(x: np.ndarray) -> np.ndarray:
    """The NFNets reference: whole norm for scalars and (squeezed) vectors, else per output unit
    (all axes but the last)."""
    if np.squeeze(x).ndim <= 1:
        return np.full(x.shape, np.sqrt(np.sum(x**2)))
    return np.broadcast_to(np.sqrt(np.sum(x**2, axis=tuple(range(x.ndim - 1)))), x.shape)


def np_agc(g: np.ndarray, w: np.ndarray, clipping: float, eps: float) -> np.ndarray:
    limit = clipping * np.maximum(np_unitwise_norm(w), eps)
    norm = np_unitwise_norm(g)
    return np.where(norm < limit, g, g * limit / np.maximum(norm, 1e-6))


def test_unitwise_norm_follows_the_nfnets_convention() -> None:
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.normal(size=shape).astype(np.float32)
        got = rko.unitwise_norm(tf.constant(x)).numpy()
        np.testing.assert_allclose(got, np_unitwise_norm(x.astype(np.float64)), rtol=1e-6)
    kernel = np.array([[3.0, 0.0], [4.0, 1.0]], np.float32)  # columns are the output units
    np.testing.assert_allclose(rko.unitwise_norm(tf.constant(kernel)).numpy(), [[5, 1], [5, 1]])


def test_agc_matches_numpy_over_several_sgd_steps() -> None:
    rng = np.random.default_rng(1)
    start = [rng.normal(0, 0.5, s).astype(np.float32) for s in SHAPES]
    start[1] = np.zeros(8, np.float32)  # a zero-initialised bias: the eps floor decides
    variables = [tf.Variable(w) for w in start]
    clipping, eps, lr = 0.05, 1e-3, 0.5
    optimizer = rko.Transformed(keras.optimizers.SGD(lr), [rko.adaptive_grad_clip(clipping, eps)])
    expected = [w.astype(np.float64) for w in start]
    clipped_units = 0
    for _ in range(5):
        # Gradients from tiny to large, so that some units are clipped and some are not.
        grads = [
            (rng.normal(size=s) * np.exp(rng.normal(0, 2, s[-1:] if s else ()))).astype(np.float32)
            for s in SHAPES
        ]
        optimizer.apply([tf.constant(g) for g in grads], variables)
        for index, g in enumerate(grads):
            reference = np_agc(g.astype(np.float64), expected[index], clipping, eps)
            clipped_units += int(np.sum(reference != g))
            expected[index] = expected[index] - lr * reference
        for variable, want in zip(variables, expected, strict=True):
            np.testing.assert_allclose(variable.numpy(), want, rtol=2e-5, atol=1e-6)
    assert clipped_units > 0


def test_agc_bounds_each_unit_by_its_weight_norm() -> None:
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    grads = [100 * rng.normal(size=s).astype(np.float32) for s in SHAPES]
    variables = [tf.Variable(w) for w in weights]
    agc = rko.adaptive_grad_clip(0.01)
    out, state = agc.update([tf.constant(g) for g in grads], (), variables, tf.constant(0), key())
    assert state == ()
    for got, w in zip(out, weights, strict=True):
        bound = 0.01 * np.maximum(np_unitwise_norm(w.astype(np.float64)), 1e-3)
        assert np.all(np_unitwise_norm(got.numpy().astype(np.float64)) <= bound * (1 + 1e-5))


def adam_update(g, m, v, t, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras Adam's step (NumPy, float64): the update and the new moments. The step size alpha
    is computed in float32 as Keras does (its 1 - 0.999^t loses 1e-5 to cancellation)."""
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g**2
    one, t32 = np.float32(1), np.float32(t)
    bias_1, bias_2 = one - np.float32(beta_1) ** t32, one - np.float32(beta_2) ** t32
    alpha = float(np.float32(lr) * np.sqrt(bias_2) / bias_1)
    return -alpha * m / (np.sqrt(v) + epsilon), m, v


GROUPS = [("*base/kernel", 0.1), ("*base/*", 0.5), ("*head*", 0.0), ("*/kernel", 2.0)]


def layered_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, name="base"),
            keras.layers.Dense(4, name="middle"),
            keras.layers.Dense(3, name="head"),
        ],
        name="net",
    )


def test_first_matching_pattern_wins_and_unmatched_paths_keep_one() -> None:
    model = layered_model()
    fnmatch = rko.scale_by_pattern(GROUPS)
    regex = rko.scale_by_pattern(
        [("base/kernel$", 0.1), ("base/", 0.5), ("head", 0.0), ("/kernel$", 2.0)], syntax="regex"
    )
    expected = {
        "net/base/kernel": 0.1,  # also matches "*base/*" and "*/kernel": the first wins
        "net/base/bias": 0.5,
        "net/middle/kernel": 2.0,
        "net/middle/bias": 1.0,  # no pattern
        "net/head/kernel": 0.0,
        "net/head/bias": 0.0,
    }
    assert fnmatch.multipliers(model.trainable_variables) == expected
    assert regex.multipliers(model.trainable_variables) == expected
    assert rko.scale_by_pattern({"NET/*": 0.1}).multiplier("net/base/kernel") == 1.0  # case


@pytest.mark.parametrize("inner_name", ["sgd", "adam", "adamw"])
def test_group_rates_match_numpy_over_several_steps(inner_name) -> None:
    model = layered_model()
    variables = model.trainable_variables
    lr, decay = 0.05, 0.1
    inner = {
        "sgd": lambda: keras.optimizers.SGD(lr),
        "adam": lambda: keras.optimizers.Adam(lr),
        "adamw": lambda: keras.optimizers.AdamW(lr, weight_decay=decay),
    }[inner_name]()
    optimizer = rko.Transformed(inner, [rko.scale_by_pattern(GROUPS)])
    multipliers = list(rko.scale_by_pattern(GROUPS).multipliers(variables).values())
    start = [np.array(v.numpy()) for v in variables]
    expected = [w.astype(np.float64) for w in start]
    moments = [(np.zeros_like(w), np.zeros_like(w)) for w in expected]
    rng = np.random.default_rng(4)
    for t in range(1, 5):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        optimizer.apply([tf.constant(g) for g in grads], variables)
        for i, (g, multiplier) in enumerate(zip(grads, multipliers, strict=True)):
            g = g.astype(np.float64) * (multiplier != 0)  # a frozen group's gradient is zeroed
            if inner_name == "sgd":
                update = -lr * g
            else:
                decayed = expected[i] * (1 - lr * decay) if inner_name == "adamw" else expected[i]
                update, *moments[i] = adam_update(g, *moments[i], t, lr)
                update = update + decayed - expected[i]
            expected[i] = expected[i] + multiplier * update
        for variable, want in zip(variables, expected, strict=True):
            np.testing.assert_allclose(variable.numpy(), want, rtol=1e-5, atol=1e-6)
    for variable, w, multiplier in zip(variables, start, multipliers, strict=True):
        if multiplier == 0:
            assert variable.numpy().tobytes() == w.tobytes()  # frozen group: bit for bit
        else:
            assert not np.array_equal(variable.numpy(), w)


def test_group_rates_and_freezing_combine() -> None:
    variable = tf.Variable([[0.05, 1.0], [2.0, -3.0]], name="w")
    optimizer = rko.Transformed(
        keras.optimizers.SGD(1.0),
        [rko.freeze_small_weights(0.1), rko.scale_by_pattern([("w*", 0.5)])],
    )
    optimizer.apply([tf.ones([2, 2])], [variable])
    want = np.array([[0.05, 0.5], [1.5, -3.5]], np.float32)  # 0.05 frozen, the others at half rate
    np.testing.assert_array_equal(variable.numpy(), want)


@pytest.mark.parametrize(
    "make",
    [
        lambda: rko.adaptive_grad_clip(0.0),
        lambda: rko.adaptive_grad_clip(0.01, eps=-1.0),
        lambda: rko.scale_by_pattern([("*", -0.1)]),
        lambda: rko.scale_by_pattern([("*", float("inf"))]),
        lambda: rko.scale_by_pattern([("(", 0.1)], syntax="regex"),
        lambda: rko.scale_by_pattern([("*", 0.1)], syntax="glob"),
        lambda: rko.scale_by_pattern(["*"]),
    ],
)
def test_bad_settings_are_refused(make) -> None:
    with pytest.raises(InputError):
        make()


def test_configs_round_trip_through_keras_serialization() -> None:
    for transform in (
        rko.adaptive_grad_clip(0.02, eps=1e-4),
        rko.scale_by_pattern([("base", 0.1), ("^head/.*", 3.0)], syntax="regex"),
    ):
        again = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(transform)
        )
        assert type(again) is type(transform)
        assert again.get_config() == transform.get_config()
    again = rko.ScaleByPattern.from_config(rko.scale_by_pattern({"a*": 0.5}).get_config())
    assert again.groups == [("a*", 0.5)] and again.syntax == "fnmatch"
