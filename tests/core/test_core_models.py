"""Classifier: logits recovery, preprocessing in pixel space, safe loading, input checks."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from core_helpers import small_cnn

from robustkit import (
    InputError,
    ModelNotFoundError,
    NotAModelError,
    RobustkitWarning,
    UnsafeModelError,
)
from robustkit.attacks import PGD
from robustkit.models import Classifier, Preprocessing, load_classifier

RNG = np.random.default_rng(0)
X = RNG.random((6, 8, 8, 1), dtype=np.float32)


def softmax_variants(logits_model: keras.Model) -> dict[str, keras.Model]:
    """Models sharing logits_model's layers but ending in softmax in three different ways."""
    inputs = keras.Input((8, 8, 1))
    features = inputs
    for layer in logits_model.layers[:-1]:
        features = layer(features)
    head = logits_model.layers[-1]
    dense_softmax = keras.layers.Dense(head.units, activation="softmax")
    out = dense_softmax(features)
    dense_softmax.set_weights(head.get_weights())
    return {
        "dense-softmax": keras.Model(inputs, out),
        "activation": keras.Sequential([logits_model, keras.layers.Activation("softmax")]),
        "softmax-layer": keras.Model(inputs, keras.layers.Softmax()(head(features))),
    }


@pytest.mark.parametrize("variant", ["dense-softmax", "activation", "softmax-layer"])
def test_softmax_head_gives_logits_and_same_adversarials(variant: str) -> None:
    logits_model = small_cnn(seed=1)
    twin = Classifier(logits_model)
    wrapped = Classifier(softmax_variants(logits_model)[variant])
    np.testing.assert_allclose(wrapped.predict_logits(X), twin.predict_logits(X), atol=1e-5)
    assert not wrapped.uses_log_probabilities and not twin.uses_log_probabilities
    attack = PGD("linf", 0.2, steps=5, seed=3)
    np.testing.assert_array_equal(attack(wrapped, X).x_adv, attack(twin, X).x_adv)


def test_probability_output_without_logits_warns_once() -> None:
    class Probabilities(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return tf.nn.softmax(self.dense(tf.reshape(x, (-1, 64))))

    model = Probabilities()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = Classifier(model, input_shape=(8, 8, 1))
        classifier.predict_logits(X)
    assert [w.category for w in caught] == [RobustkitWarning]
    assert "log" in classifier.logits_source and classifier.uses_log_probabilities
    expected = np.log(model(X).numpy())
    np.testing.assert_allclose(classifier.predict_logits(X), expected, atol=1e-5)


def test_rescaling_layer_equals_preprocessing_scale() -> None:
    keras.utils.set_random_seed(4)
    core = small_cnn(seed=4)
    with_layer = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(255.0), core])
    in_pixels = Classifier(with_layer)
    preprocessed = Classifier(core, preprocessing=Preprocessing(scale=255.0))
    attack = PGD("linf", 0.05, steps=4, seed=1)
    a, b = attack(in_pixels, X), attack(preprocessed, X)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-6)
    np.testing.assert_array_equal(a.success, b.success)


def test_normalization_layer_equals_mean_std() -> None:
    mean, std = 0.3, 0.2
    core = small_cnn(seed=5)
    norm_layer = keras.layers.Normalization(mean=mean, variance=std**2)
    with_layer = keras.Sequential([keras.Input((8, 8, 1)), norm_layer, core])
    attack = PGD("l2", 0.5, steps=4, seed=2)
    a = attack(Classifier(with_layer), X)
    b = attack(Classifier(core, preprocessing=Preprocessing(mean=[mean], std=[std])), X)
    np.testing.assert_allclose(a.x_adv, b.x_adv, atol=1e-5)
    np.testing.assert_allclose(a.linf, b.linf, atol=1e-5)


def test_bad_images_and_labels_raise_input_error() -> None:
    classifier = Classifier(small_cnn())
    with pytest.raises(InputError, match="shape"):
        classifier.validate_images(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="dtype"):
        classifier.validate_images(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(InputError, match="outside"):
        classifier.validate_images(np.full((2, 8, 8, 1), 1.5, np.float32))
    with pytest.raises(InputError, match="NaN"):
        classifier.validate_images(np.full((2, 8, 8, 1), np.nan, np.float32))
    with pytest.raises(InputError, match="3 class indices"):
        classifier.validate_labels([0, 1], 3)
    with pytest.raises(InputError, match="classes"):
        classifier.validate_labels([0, 9, 1], 3)
    with pytest.raises(InputError, match="bounds"):
        Classifier(small_cnn(), bounds=(1.0, 0.0))
    with pytest.raises(InputError, match="std"):
        Preprocessing(std=0.0)


def test_load_classifier_errors_and_safe_mode(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_classifier(tmp_path / "missing.keras")
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model")
    with pytest.raises(NotAModelError):
        load_classifier(fake)
    with pytest.raises(NotAModelError):
        load_classifier(tmp_path)

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Lambda(lambda t: t * 2.0), small_cnn()]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(UnsafeModelError, match="unsafe-load"):
        load_classifier(path)
    loaded = load_classifier(path, safe_mode=False)
    np.testing.assert_allclose(loaded.predict_logits(X), model(X).numpy(), atol=1e-5)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_load_classifier_round_trip(tmp_path, suffix: str) -> None:
    model = small_cnn(seed=7, head="softmax")
    path = tmp_path / f"model{suffix}"
    model.save(path)
    loaded = load_classifier(path)
    assert loaded.num_classes == 4 and loaded.input_shape == (8, 8, 1)
    assert "pre-softmax" in loaded.logits_source
    expected = np.log(model(X).numpy())
    logits = loaded.predict_logits(X)
    np.testing.assert_allclose(
        logits - logits.max(1, keepdims=True), expected - expected.max(1, keepdims=True), atol=1e-4
    )


def test_mean_std_must_match_the_channel_count() -> None:
    with pytest.raises(InputError, match="channel"):
        Classifier(small_cnn(), preprocessing=Preprocessing(mean=[0.1, 0.2, 0.3], std=[1, 1, 1]))


def _two_input_model() -> keras.Model:
    image, extra = keras.Input((8, 8, 1)), keras.Input((4,))
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    return keras.Model([image, extra], keras.layers.Dense(3)(joined))


def _two_output_model() -> keras.Model:
    image = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(image)
    return keras.Model(image, [keras.layers.Dense(3)(flat), keras.layers.Dense(2)(flat)])


def _channels_first_model() -> keras.Model:
    image = keras.Input((3, 8, 8))
    features = keras.layers.Conv2D(2, 3, data_format="channels_first")(image)
    return keras.Model(image, keras.layers.Dense(4)(keras.layers.Flatten()(features)))


def _tabular_model() -> keras.Model:
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(3)])


def _undefined_size_model() -> keras.Model:
    image = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    return keras.Model(image, keras.layers.Dense(5)(pooled))


@pytest.mark.parametrize(
    ("build", "problem", "fix"),
    [
        (_two_input_model, "2 inputs", "keras.Model(image, model([image, fixed_other]))"),
        (_two_output_model, "2 outputs", "model.outputs[i]"),
        (_channels_first_model, "channels-first", "keras.layers.Permute((3, 1, 2))"),
        (_tabular_model, "shape (20,)", "non-image inputs"),
        (_undefined_size_model, "(None, None, 3)", "input_shape=(height, width, channels)"),
    ],
    ids=["multi-input", "multi-output", "channels-first", "tabular", "undefined-size"],
)
def test_models_that_cannot_work_as_they_are_are_refused_naming_the_fix(
    build, problem: str, fix: str
) -> None:
    with pytest.raises(InputError) as error:
        Classifier(build())
    assert problem in str(error.value)
    assert fix in str(error.value)


def test_the_named_fixes_work() -> None:
    """Permute in front of a channels-first model, and input_shape for an undefined size, give
    classifiers whose logits equal the model's own on the rearranged images."""
    channels_first = _channels_first_model()
    wrapped = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Permute((3, 1, 2)), channels_first]
    )
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(
        Classifier(wrapped).logits(x).numpy(),
        channels_first(np.transpose(x, (0, 3, 1, 2))).numpy(),
        atol=1e-6,
    )
    undefined = _undefined_size_model()
    classifier = Classifier(undefined, input_shape=(12, 10, 3))
    assert classifier.input_shape == (12, 10, 3)
    images = np.random.default_rng(1).random((2, 12, 10, 3), dtype=np.float32)
    np.testing.assert_allclose(
        classifier.logits(images).numpy(), undefined(images).numpy(), atol=1e-6
    )
