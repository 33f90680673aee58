"""AdversarialTrainer on real architectures, one step on a few photos: the trainable weights move,
frozen ones (a fine-tuned model's base) do not, and BatchNorm's moving statistics take exactly
the one training-mode update per step the trainer documents (the attack runs in inference mode
unless ``attack_training_mode``). Each test builds its own model, since training changes it."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo_helpers import FULL_ZOO, ZOO, photos

from robustkit.attacks import PGD
from robustkit.training import AdversarialTrainer

TINY_EPS = 1e-4  # the adversarial batch is the clean one up to this, for the BatchNorm check


def values(variables: list) -> list[np.ndarray]:
    return [np.array(variable.numpy()) for variable in variables]


def train_one_step(classifier, x: np.ndarray, eps: float = 8 / 255, **options) -> None:
    """One PGD-training step (2 attack steps) on the whole batch x, labelled by the model."""
    y = classifier.predict_logits(x).argmax(axis=1)
    trainer = AdversarialTrainer(
        classifier, keras.optimizers.SGD(0.01), PGD("linf", eps, steps=2), seed=0, **options
    )
    history = trainer.fit((x, y), epochs=1, batch_size=len(x), shuffle=False)
    assert history.epoch == [0] and np.isfinite(history.history["loss"][0])


def batch_norm_update(classifier, layer: keras.layers.BatchNormalization, x: np.ndarray) -> tuple:
    """(the layer's moving mean, the per-channel mean of its input on pixels x): read before
    training, they give the moving mean one update on x would leave."""
    model = classifier.model
    inputs = keras.Model(model.inputs, layer.input)(classifier.preprocessing(tf.constant(x)))
    return layer.moving_mean.numpy().copy(), inputs.numpy().mean(axis=(0, 1, 2))


def assert_updates(
    before: np.ndarray, after: np.ndarray, batch_mean: np.ndarray, m: float, k: int | None
) -> None:
    """after = m^k before + (1 - m^k) batch_mean, as k training-mode passes with momentum m on
    (nearly) the same batch leave it; k None asserts more than one pass."""
    moved = after - before
    towards = batch_mean - before
    ratio = float(np.sum(moved * towards) / np.sum(towards * towards))  # least squares
    if k is None:
        assert ratio > 1.5 * (1 - m)
    else:
        assert ratio == pytest.approx(1 - m**k, rel=0.02)
        np.testing.assert_allclose(moved, (1 - m**k) * towards, atol=0.05 * np.abs(moved).max())


def test_mobilenet_v2_trains_every_layer_with_one_batch_norm_update_per_step() -> None:
    spec = ZOO["mobilenet_v2"]
    classifier = spec.classifier()
    model = classifier.model
    x = photos(spec.size)
    first = model.get_layer("bn_Conv1")
    before, batch_mean = batch_norm_update(classifier, first, x)
    weights = values(model.trainable_variables)
    train_one_step(classifier, x, eps=TINY_EPS)
    changed = [
        not np.array_equal(old, new)
        for old, new in zip(weights, values(model.trainable_variables), strict=True)
    ]
    assert all(changed)
    assert_updates(before, first.moving_mean.numpy(), batch_mean, first.momentum, k=1)


def test_the_fine_tuned_models_frozen_base_keeps_its_weights_and_statistics() -> None:
    spec = ZOO["fine_tuned"]
    classifier = spec.classifier()
    model = classifier.model
    base, head = model.layers[2], model.get_layer("head")
    frozen, head_before = values(base.weights), values(head.weights)
    assert [v.name for v in model.trainable_variables] == ["kernel", "bias"]
    train_one_step(classifier, photos(spec.size))
    for old, new in zip(frozen, values(base.weights), strict=True):
        np.testing.assert_array_equal(old, new)  # BatchNorm statistics included
    assert all(
        not np.array_equal(old, new)
        for old, new in zip(head_before, values(head.weights), strict=True)
    )


def test_a_subclassed_model_updates_batch_norm_once_or_on_every_attack_pass() -> None:
    spec = ZOO["subclassed"]
    x = photos(spec.size)
    for attack_training_mode, passes in ((False, 1), (True, None)):
        classifier = spec.classifier()
        model = classifier.model
        layer = model.stem_bn
        before = layer.moving_mean.numpy().copy()
        stem = model.stem(classifier.preprocessing(tf.constant(x))).numpy().mean(axis=(0, 1, 2))
        weights = values(model.trainable_variables)
        train_one_step(classifier, x, eps=TINY_EPS, attack_training_mode=attack_training_mode)
        assert all(
            not np.array_equal(old, new)
            for old, new in zip(weights, values(model.trainable_variables), strict=True)
        )
        assert_updates(before, layer.moving_mean.numpy(), stem, layer.momentum, k=passes)


@pytest.mark.slow
@pytest.mark.skipif(not FULL_ZOO, reason="set ROBUSTKIT_FULL_ZOO=1 to run")
@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "convnext_tiny"])
def test_the_big_architectures_train_through_their_logits(name) -> None:
    """ResNet50's softmax head is trained through its recovered logits: the Dense layer moves and
    the model's output stays the softmax of the classifier's logits."""
    spec = ZOO[name]
    classifier = spec.classifier()
    model = classifier.model
    x = photos(spec.size)[:2]
    head = model.layers[-1]  # the Dense head
    before = values(head.weights)
    train_one_step(classifier, x)
    assert all(
        not np.array_equal(old, new) for old, new in zip(before, values(head.weights), strict=True)
    )
    logits = classifier.logits(tf.constant(x)).numpy()
    outputs = model(classifier.preprocessing(tf.constant(x))).numpy()
    if name == "resnet50":
        outputs = np.log(outputs)
        logits = logits - logits.max(axis=1, keepdims=True)
        outputs = outputs - outputs.max(axis=1, keepdims=True)
    np.testing.assert_allclose(logits, outputs, rtol=1e-3, atol=1e-3)
