"""Real Keras applications as Classifiers: the pixel-space preprocessing reproduces each
application's own ``preprocess_input``, a softmax head gives back its exact logits, and the
structures robustkit must see into (nested base, subclassed model) are what the tests think."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo_helpers import CAFFE_MEAN_RGB, CLASSES, ZOO, photos

from robustkit.errors import InputError
from robustkit.gradients import input_gradients
from robustkit.models import Classifier, Preprocessing


def model_input(classifier: Classifier, x: np.ndarray) -> np.ndarray:
    """What the classifier's preprocessing hands the model's first layer for pixels x."""
    return classifier.preprocessing(tf.constant(x)).numpy()


def test_resnet50_caffe_preprocessing_is_preprocessing_plus_the_channel_flip(zoo) -> None:
    """Preprocessing cannot reorder channels; with the flip inside the model, scale 255 and the
    RGB-ordered mean reproduce keras.applications.resnet50.preprocess_input exactly."""
    classifier = zoo("resnet50")
    x = photos(32)
    flip = classifier.model.get_layer("rgb_to_bgr")
    ours = flip(model_input(classifier, x)).numpy()
    expected = keras.applications.resnet50.preprocess_input(x * 255)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    assert classifier.preprocessing.to_dict()["mean"] == list(CAFFE_MEAN_RGB)


def test_mobilenet_v2_preprocessing_is_the_applications_own(zoo) -> None:
    x = photos(64)
    ours = model_input(zoo("mobilenet_v2"), x)
    expected = keras.applications.mobilenet_v2.preprocess_input(x * 255)
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    assert ours.min() >= -1 and ours.max() <= 1


@pytest.mark.parametrize(
    ("name", "module", "inside"),
    [
        ("efficientnet_b0", keras.applications.efficientnet, (keras.layers.Rescaling,)),
        ("convnext_tiny", keras.applications.convnext, ()),
    ],
)
def test_models_with_preprocessing_inside_take_0_to_255(zoo, name, module, inside) -> None:
    """preprocess_input is the identity for these (the model normalizes itself), so the
    classifier only scales [0, 1] pixels to 0..255."""
    classifier = zoo(name)
    x = photos(ZOO[name].size)
    fed = model_input(classifier, x)
    np.testing.assert_allclose(fed, module.preprocess_input(x * 255), atol=1e-4)
    layers = [type(layer) for layer in classifier.model.layers[:4]]
    assert keras.layers.Normalization in layers
    assert all(kind in layers for kind in inside)


def test_a_softmax_head_gives_back_its_exact_logits(zoo) -> None:
    """ResNet50's include_top head is Dense(softmax): the classifier returns the Dense layer's
    pre-softmax output (same variables), whose softmax is the model's output."""
    classifier = zoo("resnet50")
    model = classifier.model
    head = model.get_layer("predictions")
    assert classifier.logits_source == "pre-softmax output of Dense layer 'predictions'"
    assert not classifier.uses_log_probabilities
    x = photos(32)
    logits = classifier.logits(tf.constant(x)).numpy()
    inputs = classifier.preprocessing(tf.constant(x))
    features = keras.Model(model.inputs, head.input)(inputs).numpy()
    kernel, bias = head.get_weights()
    np.testing.assert_allclose(logits, features @ kernel + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        tf.nn.softmax(logits).numpy(), model(inputs).numpy(), rtol=1e-5, atol=1e-6
    )
    assert len(np.unique(logits.argmax(axis=1))) > 1  # calibrated: not one class for all


@pytest.mark.parametrize("wrapper", ["sequential", "functional"])
def test_a_softmax_application_wrapped_in_a_model_gives_back_its_logits(wrapper: str) -> None:
    """keras.Sequential([Rescaling, MobileNetV2 with its softmax top]) or the functional
    keras.Model(image, MobileNetV2(Rescaling(image))): the nested head is unwrapped (no
    log-probabilities), and logits and input gradients are those of the same weights with a
    logits top."""
    keras.utils.set_random_seed(6)

    def wrapped(activation: str | None) -> keras.Model:
        application = keras.applications.MobileNetV2(
            weights=None,
            alpha=0.35,
            classes=CLASSES,
            input_shape=(32, 32, 3),
            classifier_activation=activation,
        )
        rescaling = keras.layers.Rescaling(1 / 127.5, offset=-1)
        if wrapper == "sequential":
            return keras.Sequential([keras.Input((32, 32, 3)), rescaling, application])
        image = keras.Input((32, 32, 3))
        return keras.Model(image, application(rescaling(image)))

    softmax, twin = wrapped("softmax"), wrapped(None)
    twin.set_weights(softmax.get_weights())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RobustkitWarning about log-probabilities
        classifier = Classifier(softmax, preprocessing=Preprocessing(scale=255))
    nested = softmax.layers[-1].name
    assert classifier.logits_source == (
        f"pre-softmax output of Dense layer 'predictions' in nested model {nested!r}"
    )
    reference = Classifier(twin, preprocessing=Preprocessing(scale=255))
    x, y = tf.constant(photos(32)[:2]), tf.constant([0, 1])
    np.testing.assert_allclose(classifier.logits(x), reference.logits(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        tf.nn.softmax(classifier.logits(x)), softmax(x * 255), rtol=1e-5, atol=1e-6
    )
    ours, theirs = (input_gradients(c, x, y).gradient.numpy() for c in (classifier, reference))
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6 * np.abs(theirs).max())


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "convnext_tiny", "fine_tuned"])
def test_logits_heads_are_used_as_they_are(zoo, name) -> None:
    classifier = zoo(name)
    x = photos(ZOO[name].size)
    assert classifier.logits_source == "model output"
    assert classifier.num_classes == CLASSES and classifier.input_shape == ZOO[name].input_shape
    inputs = classifier.preprocessing(tf.constant(x))
    np.testing.assert_allclose(
        classifier.predict_logits(x), classifier.model(inputs).numpy(), rtol=1e-3, atol=1e-3
    )


def test_the_fine_tuned_model_nests_a_frozen_functional_base(zoo) -> None:
    model = zoo("fine_tuned").model
    base = model.layers[2]
    assert isinstance(base, keras.Model) and base.name.startswith("mobilenetv2")
    assert not base.trainable and base.get_layer("Conv_1") is not None
    assert [weight.name for weight in model.trainable_weights] == ["kernel", "bias"]  # the head
    assert isinstance(model.layers[1], keras.layers.Rescaling)  # 0..255 in


def test_a_subclassed_model_needs_its_input_shape_named(zoo) -> None:
    model = zoo("subclassed").model
    with pytest.raises(InputError, match=r"input_shape=\(height, width, channels\)"):
        Classifier(model, preprocessing=ZOO["subclassed"].preprocessing)
    classifier = zoo("subclassed")
    assert classifier.input_shape == (32, 32, 3) and classifier.logits_source == "model output"
    x = photos(32)
    expected = model((x - 0.5) / 0.25).numpy()
    np.testing.assert_allclose(classifier.predict_logits(x), expected, rtol=1e-5, atol=1e-5)


def test_a_base_of_undefined_size_runs_at_the_size_it_is_given() -> None:
    """MobileNetV2 built for (None, None, 3) is refused with the fix named; given input_shape it
    gives, at that size, the logits of its own forward pass."""
    keras.utils.set_random_seed(5)
    base = keras.applications.MobileNetV2(
        weights=None, alpha=0.35, include_top=False, input_shape=(None, None, 3), pooling="avg"
    )
    image = keras.Input((None, None, 3))
    model = keras.Model(image, keras.layers.Dense(CLASSES)(base(image)))
    preprocessing = ZOO["mobilenet_v2"].preprocessing
    with pytest.raises(InputError, match=r"input_shape=.*--input-size HxW"):
        Classifier(model, preprocessing=preprocessing)
    for size in (48, 64):
        classifier = Classifier(model, preprocessing=preprocessing, input_shape=(size, size, 3))
        x = photos(size)[:2]
        assert classifier.input_shape == (size, size, 3)
        np.testing.assert_allclose(
            classifier.logits(tf.constant(x)).numpy(),
            model(tf.constant(x * 2 - 1)).numpy(),
            rtol=1e-5,
            atol=1e-5,
        )


def test_a_fine_tuned_model_with_two_heads_or_two_inputs_is_refused_naming_the_fix(zoo) -> None:
    model = zoo("fine_tuned").model
    pooled = model.get_layer("pool").output
    second = keras.layers.Dense(2, name="second_head")(pooled)
    two_heads = keras.Model(model.inputs, [model.outputs[0], second])
    with pytest.raises(InputError, match=r"2 outputs.*keras.Model\(model.inputs, model.outputs"):
        Classifier(two_heads)
    one = Classifier(keras.Model(two_heads.inputs, two_heads.outputs[1]))
    assert one.num_classes == 2
    metadata = keras.Input((4,), name="metadata")
    joined = keras.layers.Concatenate()([pooled, metadata])
    two_inputs = keras.Model([*model.inputs, metadata], keras.layers.Dense(CLASSES)(joined))
    with pytest.raises(InputError, match=r"2 inputs.*model of the image alone"):
        Classifier(two_inputs)
