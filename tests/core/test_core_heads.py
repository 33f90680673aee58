"""Logits recovery through nested models: functional and Sequential wrappers around a model
ending in softmax, at depth one and two, give the pre-softmax values of a linear-head twin
(and log(probabilities) up to the row's log-sum-exp), share the model's variables and leave it
as it was; where no softmax can be seen past, the warning says why."""

import re
import warnings
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from robustkit import RobustkitWarning
from robustkit.gradients import input_gradients
from robustkit.models import Classifier

SHAPE = (6, 6, 3)
X = np.random.default_rng(0).random((4, *SHAPE), dtype=np.float32)
ENDINGS = ("dense", "activation", "softmax-layer", "ops-softmax")


def base(softmax: bool, ending: str) -> keras.Model:
    """Conv(relu) -> pooling -> Dropout -> Dense(5) named "base", ending in softmax (as the
    Dense's activation, an Activation or Softmax layer, or keras.ops.softmax) when asked."""
    image = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 3, activation="relu")(image)
    h = keras.layers.Dropout(0.5)(keras.layers.GlobalAveragePooling2D()(h))
    dense_softmax = softmax and ending == "dense"
    out = keras.layers.Dense(5, activation="softmax" if dense_softmax else None, name="pred")(h)
    if softmax and ending != "dense":
        out = {
            "activation": keras.layers.Activation("softmax", name="probabilities"),
            "softmax-layer": keras.layers.Softmax(name="probabilities"),
            "ops-softmax": keras.ops.softmax,
        }[ending](out)
    return keras.Model(image, out, name="base")


def functional(inner: keras.Model) -> keras.Model:
    image = keras.Input(SHAPE)
    return keras.Model(image, inner(keras.layers.Rescaling(2.0, offset=-1)(image)), name="outer")


def functional_depth_two(inner: keras.Model) -> keras.Model:
    image = keras.Input(SHAPE)
    middle = keras.Model(image, inner(keras.layers.Rescaling(0.5)(image)), name="middle")
    return functional(middle)


def sequential_in_functional(inner: keras.Model) -> keras.Model:
    middle = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Rescaling(0.5), inner], name="middle"
    )
    return functional(middle)


def functional_in_sequential(inner: keras.Model) -> keras.Model:
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(3.0), functional(inner)])


def frozen_inference_base(inner: keras.Model) -> keras.Model:
    """The transfer-learning call ``base(x, training=False)``: the base's Dropout stays off."""
    image = keras.Input(SHAPE)
    return keras.Model(image, inner(image, training=False), name="outer")


WRAPPERS: dict[str, Callable[[keras.Model], keras.Model]] = {
    "functional": functional,
    "functional-depth-two": functional_depth_two,
    "sequential-in-functional": sequential_in_functional,
    "functional-in-sequential": functional_in_sequential,
    "frozen-inference-base": frozen_inference_base,
}


def fine_tuned(softmax: bool, ending: str) -> keras.Model:
    """A nested feature extractor, pooling and a new Dense(5, softmax) head on top."""
    image = keras.Input(SHAPE)
    features = keras.Model(image, keras.layers.Conv2D(4, 3, activation="relu")(image), name="base")
    pooled = keras.layers.GlobalAveragePooling2D()(features(image))
    head = keras.layers.Dense(5, activation="softmax" if softmax else None, name="pred")
    return keras.Model(image, head(pooled), name="outer")


def pair(build: Callable[[bool], keras.Model]) -> tuple[keras.Model, keras.Model]:
    """The softmax model and its twin with a linear head and the same weights."""
    keras.utils.set_random_seed(1)
    model, twin = build(True), build(False)
    twin.set_weights(model.get_weights())
    return model, twin


def log_sum_exp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return top + np.log(np.exp(z - top).sum(axis=1, keepdims=True))


HEADS = {  # patterns: Keras numbers the names of the operations it creates
    "dense": "pre-softmax output of Dense layer 'pred'",
    "activation": "input of softmax layer 'probabilities'",
    "softmax-layer": "input of softmax layer 'probabilities'",
    "ops-softmax": r"input of softmax operation 'softmax(_\d+)?'",
}
NESTING = {
    "functional": " in nested model 'base'",
    "functional-depth-two": " in nested model 'base' in nested model 'middle'",
    "sequential-in-functional": " in nested model 'base' in nested model 'middle'",
    "functional-in-sequential": " in nested model 'base' in nested model 'outer'",
    "frozen-inference-base": " in nested model 'base'",
    "fine-tuned": "",  # the softmax Dense is the outer model's own last layer
}
CASES = [(name, ending) for name in WRAPPERS for ending in ENDINGS] + [("fine-tuned", "dense")]


@pytest.mark.parametrize(("wrapper", "ending"), CASES)
def test_a_nested_softmax_gives_the_pre_softmax_logits_on_the_same_variables(
    wrapper: str, ending: str
) -> None:
    if wrapper == "fine-tuned":
        model, twin = pair(lambda softmax: fine_tuned(softmax, ending))
    else:
        model, twin = pair(lambda softmax: WRAPPERS[wrapper](base(softmax, ending)))
    probabilities = model(X).numpy()
    layers, weights = [id(layer) for layer in model.layers], len(model.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RobustkitWarning about log-probabilities
        classifier = Classifier(model)
    assert not classifier.uses_log_probabilities
    assert re.fullmatch(HEADS[ending] + NESTING[wrapper], classifier.logits_source)

    # Exact: the linear twin's outputs; shift-invariant: logits - log p = logsumexp(logits).
    logits = classifier.logits(X).numpy()
    np.testing.assert_allclose(logits, twin(X).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        logits - np.log(probabilities), np.tile(log_sum_exp(logits), (1, 5)), atol=1e-5
    )
    assert np.ptp(logits - np.log(probabilities), axis=1).max() < 1e-5
    y = tf.constant([0, 1, 2, 3])
    ours = input_gradients(classifier, X, y).gradient.numpy()
    np.testing.assert_allclose(ours, input_gradients(Classifier(twin), X, y).gradient, atol=1e-6)
    if wrapper == "frozen-inference-base":  # the base's training=False is kept
        np.testing.assert_allclose(classifier.logits(X, training=True), logits, atol=1e-6)

    # The model is left as it was, and a change of its weights is seen (compiled path too).
    assert [id(layer) for layer in model.layers] == layers and len(model.weights) == weights
    np.testing.assert_allclose(model(X).numpy(), probabilities, atol=1e-7)
    classifier.predict_logits(X)
    for weight in model.weights:
        weight.assign(weight * 1.5 + 0.05)
    twin.set_weights(model.get_weights())
    np.testing.assert_allclose(classifier.predict_logits(X), twin(X).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(classifier.predict_logits(X), logits, atol=1e-3)


class SubclassedProbabilities(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(self.dense(keras.ops.reshape(x, (-1, 108))))


def lambda_softmax_inside() -> keras.Model:
    image = keras.Input(SHAPE)
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    probabilities = keras.layers.Lambda(tf.nn.softmax, name="soft")(keras.layers.Dense(3)(pooled))
    return functional(keras.Model(image, probabilities, name="inside"))


def scaled_after_the_softmax() -> keras.Model:
    model = functional(base(True, "dense"))
    return keras.Sequential([model, keras.layers.Rescaling(1.0, name="after")])


UNRECOVERABLE = {
    "lambda": (lambda_softmax_inside, "in nested model 'inside', its output comes from Lambda"),
    "after": (scaled_after_the_softmax, "its output comes from Rescaling 'after', not from a"),
    "subclassed": (SubclassedProbabilities, "has no graph to read (a subclassed model"),
    "callable": (
        lambda: lambda x, training=False: tf.nn.softmax(keras.ops.reshape(x, (-1, 108))[:, :3]),
        "it is a plain callable, not a Keras model",
    ),
}


@pytest.mark.parametrize("case", list(UNRECOVERABLE))
def test_where_no_softmax_can_be_seen_past_the_warning_says_why(case: str) -> None:
    build, why = UNRECOVERABLE[case]
    keras.utils.set_random_seed(2)
    model = build()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = Classifier(model, input_shape=SHAPE)
    assert [w.category for w in caught] == [RobustkitWarning]
    message = str(caught[0].message)
    assert message.startswith("The model outputs probabilities and its logits cannot be recovered")
    assert why in message
    assert classifier.uses_log_probabilities
    expected = np.log(model(tf.constant(X)).numpy())
    np.testing.assert_allclose(classifier.logits(X).numpy(), expected, atol=1e-6)
