"""Every saliency method on real architectures, at cheap settings, each checked against what it
must equal: the taped gradient, gradient x input, IG's and KernelSHAP's completeness, an
occluded window's drop, the closed-form CAM of a pooled linear head; the CAM family reads the
last convolution at any depth (inside a nested base, inside a subclassed model)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from zoo_helpers import FULL_ZOO, ZOO, photos

from robustkit.errors import InputError
from robustkit.gradients import guided_relu_layers
from robustkit.saliency import METHODS, attribute, find_layer

CAM_METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam")
ONE_CHANNEL = (*CAM_METHODS, "occlusion", "rise", "kernel_shap", "lime")


def cheap_options(method: str, size: int) -> dict:
    """Few steps, samples and masks; coalitions of 4 patches."""
    half = size // 2
    return {
        "smoothgrad": {"samples": 2, "noise": 0.1, "seed": 3},
        "square_grad": {"samples": 2, "noise": 0.1, "seed": 3},
        "vargrad": {"samples": 2, "noise": 0.1, "seed": 3},
        "integrated_gradients": {"steps": 4},
        "occlusion": {"patch_size": half},
        "rise": {"samples": 8, "grid_size": 4, "seed": 3},
        "kernel_shap": {"samples": 16, "patch_size": half, "seed": 3},
        "lime": {"samples": 16, "patch_size": half, "seed": 3},
    }.get(method, {})


def target_logit(classifier, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """f(x) = the target class's logit, eagerly."""
    logits = classifier.logits(tf.constant(x, tf.float32)).numpy()
    return logits[np.arange(len(x)), target]


def taped_gradient(classifier, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """d f / d x by an eager tape of the classifier's own forward pass."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = classifier.logits(x)
        chosen = tf.gather(logits, target, axis=1, batch_dims=1)
    return tape.gradient(chosen, x).numpy()


_TAPED: dict[tuple[str, bytes, tuple[int, ...]], np.ndarray] = {}


def model_gradient(classifier, x: np.ndarray, target: np.ndarray, spec) -> np.ndarray:
    """:func:`taped_gradient` of the zoo's model ``spec``, taped once per images and targets (the
    gradient and SmoothGrad checks share it; an eager pass through a big model costs seconds)."""
    key = (spec.name, x.tobytes(), tuple(target.tolist()))
    if key not in _TAPED:
        _TAPED[key] = taped_gradient(classifier, x, target)
    return _TAPED[key]


# Every (model, method) pair; the three heavy architectures' pairs only with ROBUSTKIT_FULL_ZOO=1
# (each method traces a new graph of 150-250 layers: about 10 s a pair on two cores).
LIGHT = ("fine_tuned", "subclassed")
HEAVY = ("mobilenet_v2", "resnet50", "efficientnet_b0", "convnext_tiny")
PAIRS = [(name, method) for name in LIGHT for method in METHODS] + [
    pytest.param(
        name,
        method,
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not FULL_ZOO, reason="set ROBUSTKIT_FULL_ZOO=1 to run"),
        ],
    )
    for name in HEAVY
    for method in METHODS
]


@pytest.mark.parametrize(("name", "method"), PAIRS)
def test_every_method_on_every_model(zoo, name, method) -> None:
    spec, classifier = ZOO[name], zoo(name)
    x = photos(spec.size)[:2]
    if method == "guided_backprop" and not spec.guided:
        with pytest.raises(InputError, match="no guided rule"):
            attribute(classifier, x, method)
        return
    result = attribute(classifier, x, method, **cheap_options(method, spec.size))
    predicted = classifier.predict_logits(x).argmax(axis=1)
    assert result.method == method
    assert result.target.tolist() == result.predicted.tolist() == predicted.tolist()
    channels = 1 if method in ONE_CHANNEL else 3
    assert result.maps.shape == (2, spec.size, spec.size, channels)
    assert np.all(np.isfinite(result.maps))
    CHECKS.get(method, lambda *args: None)(classifier, x, result, spec)


def check_gradient(classifier, x, result, spec) -> None:
    expected = model_gradient(classifier, x, result.target, spec)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(result.maps, expected, atol=1e-3 * scale)
    np.testing.assert_allclose(result.score, target_logit(classifier, x, result.target), rtol=1e-3)


def check_gradient_x_input(classifier, x, result, spec) -> None:
    gradient = attribute(classifier, x, "gradient").maps
    np.testing.assert_allclose(result.maps, gradient * x, rtol=1e-5, atol=1e-7)


def check_guided(classifier, x, result, spec) -> None:
    relus = guided_relu_layers(classifier)
    assert relus and all(isinstance(layer, keras.layers.Layer) for layer in relus)
    assert not any("call" in vars(layer) for layer in relus)  # the layers' own calls are back
    gradient = attribute(classifier, x, "gradient").maps
    assert not np.allclose(result.maps, gradient)  # the gate changed something


def check_noise_family(classifier, x, result, spec) -> None:
    """The three aggregations of one seeded noise draw agree: var = E[g²] - E[g]²."""
    options = cheap_options("smoothgrad", spec.size)
    mean = attribute(classifier, x, "smoothgrad", **options).maps.astype(np.float64)
    square = attribute(classifier, x, "square_grad", **options).maps.astype(np.float64)
    variance = attribute(classifier, x, "vargrad", **options).maps
    np.testing.assert_allclose(variance, np.maximum(square - mean**2, 0), atol=1e-5 * square.max())
    noiseless = attribute(classifier, x, "smoothgrad", samples=2, noise=0.0).maps
    gradient = model_gradient(classifier, x, result.target, spec)
    np.testing.assert_allclose(noiseless, gradient, atol=1e-3 * np.abs(gradient).max())


def check_integrated_gradients(classifier, x, result, spec) -> None:
    black = target_logit(classifier, np.zeros_like(x), result.target)
    np.testing.assert_allclose(result.baseline_score, black, rtol=1e-3, atol=1e-4)
    completeness = result.maps.reshape(2, -1).sum(axis=1) - (result.score - result.baseline_score)
    np.testing.assert_allclose(result.delta, completeness, rtol=1e-3, atol=1e-3)


def check_cam(classifier, x, result, spec) -> None:
    assert result.options["layer"] == spec.last_conv == find_layer(classifier, None).name
    assert result.maps.min() >= 0


def check_score_cam(classifier, x, result, spec) -> None:
    check_cam(classifier, x, result, spec)
    black = target_logit(classifier, np.zeros_like(x), result.target)
    np.testing.assert_allclose(result.baseline_score, black, rtol=1e-3, atol=1e-4)


def check_occlusion(classifier, x, result, spec) -> None:
    """With stride = patch, a pixel's map is the drop f(x) - f(x, its window black)."""
    half = spec.size // 2
    occluded = x.copy()
    occluded[:, :half, :half] = 0
    drop = result.score - target_logit(classifier, occluded, result.target)
    np.testing.assert_allclose(result.maps[:, 0, 0, 0], drop, rtol=1e-3, atol=1e-4)
    window = result.maps[:, :half, :half, 0]
    np.testing.assert_allclose(window.std(axis=(1, 2)), 0, atol=1e-6 * (1 + np.abs(window).max()))


def check_kernel_shap(classifier, x, result, spec) -> None:
    """The four patches' values sum to f(x) - f(black): the efficiency constraint."""
    gap = np.abs(result.score - result.baseline_score)
    assert np.all(np.abs(result.delta) <= 1e-3 * (1 + gap))


CHECKS = {
    "gradient": check_gradient,
    "gradient_x_input": check_gradient_x_input,
    "guided_backprop": check_guided,
    "smoothgrad": check_noise_family,
    "integrated_gradients": check_integrated_gradients,
    "grad_cam": check_cam,
    "grad_cam_plus_plus": check_cam,
    "layer_cam": check_cam,
    "score_cam": check_score_cam,
    "occlusion": check_occlusion,
    "kernel_shap": check_kernel_shap,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_the_cam_layer_and_the_guided_relus_are_found_at_any_depth(zoo, name) -> None:
    """Without tracing anything: the default Grad-CAM layer is the last 2-D convolution (inside
    the nested base, inside the subclassed model), guided backpropagation finds the ReLU and
    ReLU6 layers (MobileNetV2's, also inside the fine-tuned model's nested base) and refuses
    the models with activations that have no guided rule (EfficientNet's swish and sigmoid,
    ConvNeXt's GELU), naming them."""
    spec, classifier = ZOO[name], zoo(name)
    assert find_layer(classifier, None).name == spec.last_conv
    if spec.guided:
        assert len(guided_relu_layers(classifier)) > 1
    else:
        unguided = {"efficientnet_b0": "silu .*sigmoid", "convnext_tiny": "gelu"}[name]
        with pytest.raises(InputError, match=f"also has {unguided}.*no guided rule"):
            guided_relu_layers(classifier)


def test_grad_cam_inside_the_nested_base_is_the_closed_form_cam(zoo) -> None:
    """At the base's last activation before global pooling and a linear head, Grad-CAM's weights
    are W[:, t] / (h w), so its map is ReLU(A · W[:, t]) / (h w) upsampled (Zhou et al. 2016)."""
    classifier = zoo("fine_tuned")
    model = classifier.model
    x = photos(64)[:2]
    result = attribute(classifier, x, "grad_cam", layer="out_relu")
    assert result.options["layer"] == "out_relu"
    base = model.layers[2]
    activation = base(model.get_layer("to_unit")(classifier.preprocessing(tf.constant(x))))
    kernel = model.get_layer("head").get_weights()[0][:, result.target]  # [K, N]
    height, width = activation.shape[1:3]
    cam = np.einsum("nhwk,kn->nhw", activation.numpy(), kernel)[..., None] / (height * width)
    expected = tf.image.resize(np.maximum(cam, 0), (64, 64), method="bilinear").numpy()
    np.testing.assert_allclose(result.maps, expected, rtol=1e-4, atol=1e-5 * expected.max())
