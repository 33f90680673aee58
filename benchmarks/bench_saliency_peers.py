"""robustkit.saliency side by side with its peers Xplique 2.0.2 and tf-keras-vis 0.8.7 (issue 13).

Same models, same images, same targets and the same options on every side, in one process:

* agreement: per-image Spearman rank correlation between robustkit's map and the peer's (min and
  median per method and model), for the deterministic methods; where a peer defines a method
  differently, also the peer's own code with that one difference set as robustkit (and the
  paper) has it, to show that the difference accounts for the gap. Metric values side by side:
  MuFidelity (Xplique's code run on robustkit's subsets, see :func:`mu_fidelity_rows`) and
  Deletion, per image, on the same maps.
* speed: images/s of each side in interleaved rounds (the ``interleaved`` helper of
  bench_saliency.py), ratio ours / peer per method and model (median over rounds, by wall and
  by CPU time); for the perturbation methods (occlusion, RISE) also the ratio to the compiled
  forward-pass limit, the same number of forward passes on batches of the same size, and for
  the gradient methods (gradient, gradient x input, guided backpropagation, SmoothGrad,
  SquareGrad, VarGrad, IG) to
  the compiled forward+backward limit: one compiled input gradient of the target logit per
  batch of BATCH of the method's points (images x samples or steps), on the same images and
  targets (guided backpropagation: its guided gradient).
* memory: peak bytes of TensorFlow's CPU allocator during one call, beyond what it held before,
  as IG steps, SmoothGrad samples and RISE masks grow (robustkit and Xplique).

Without a part flag all three run; ``--agreement-only``, ``--speed-only``, ``--memory-only``
pick one. Stochastic methods (SmoothGrad, SquareGrad, VarGrad, RISE, KernelSHAP, LIME: random
draws the peers cannot be given) are in the speed and memory parts only, at equal work.

Models: examples/mnist_cnn.keras on MNIST test digits 8000.. (28x28x1), and a small RGB CNN at
64x64x3 on the same digits resized and tinted, trained here for 20 s on test digits 0..7999
(``--models`` also offers MobileNetV2 with ``weights=None``: untrained, for speed only).
Targets: the class robustkit's classifier predicts, one-hot for the peers. Every side runs on
batches of 64 (robustkit ``internal_batch_size``, the peers' ``batch_size``).

The peers are benchmark-only dependencies, in their own virtual environment, never in
pyproject.toml. Xplique 2.0.2 pins ``tensorflow[and-cuda]<=2.20``, so it goes in with --no-deps
next to the TensorFlow, Keras and NumPy of the development venv (/work/venv):

    python3.11 -m venv /work/peervenv
    /work/peervenv/bin/pip install tensorflow==2.21.0 keras==3.15.1 numpy==2.4.6 pillow click \\
        colorcet
    /work/peervenv/bin/pip install --no-deps xplique==2.0.2 tf-keras-vis==0.8.7 tf-keras==2.21.0
    /work/peervenv/bin/pip install einops deprecated opencv-python-headless matplotlib \\
        tensorflow-probability==0.25.0 "scikit-learn<=1.7.2" "scikit-image<=0.25.2" \\
        "scipy<=1.15.3" imageio

``import xplique`` needs tensorflow-probability (which itself insists on tf-keras, installed with
--no-deps so that it cannot move TensorFlow) and scikit-image; the upper bounds on scikit-learn,
scikit-image and scipy are Xplique's own pins. colorcet is robustkit's, which is imported from
the checkout (PYTHONPATH), not installed. Run from the repository root:

    PYTHONPATH=. /work/peervenv/bin/python benchmarks/bench_saliency_peers.py --agreement-only
    PYTHONPATH=. /work/peervenv/bin/python benchmarks/bench_saliency_peers.py --speed-only \\
        --rounds 5 --images 64 --json benchmarks/results/saliency_peers_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from bench_saliency import DEVICE, compiled_limit, interleaved, ratios, rgb_cnn

from robustkit import saliency as rk
from robustkit.errors import InputError
from robustkit.gradients import activation_gradients, guided_input_gradients, input_gradients
from robustkit.io.mnist import load_mnist
from robustkit.models import Classifier, load_classifier
from robustkit.saliency.checks import salience_ranks
from robustkit.saliency.gradcam import find_layer
from robustkit.saliency.masks import grid_labels, point_keys, random_subsets

try:
    import tf_keras_vis
    import tf_keras_vis.scorecam as vis_scorecam
    import xplique
    import xplique.metrics.fidelity as xplique_fidelity
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore
    from xplique.attributions import (
        GradCAM,
        GradCAMPP,
        GradientInput,
        GuidedBackprop,
        IntegratedGradients,
        KernelShap,
        Lime,
        Occlusion,
        Rise,
        Saliency,
        SmoothGrad,
        SquareGrad,
        VarGrad,
    )
    from xplique.metrics import Deletion, MuFidelity
except ImportError as error:  # the peers live in their own venv, see the docstring
    sys.exit(f"{error}: run this with the peers' venv (see the install commands at the top).")

BATCH = 64  # images (points) per forward/backward pass, on every side
FIRST_DIGIT = 8000  # held-out MNIST test digits 8000..
MUFIDELITY_SAMPLES = 128
MUFIDELITY_FRACTION = 0.2
DELETION_STEPS = 16  # divides 28 * 28 and 64 * 64: no rounding of the pixel counts


@dataclass
class Options:
    """The options every side runs with (one place, so that both do the same work)."""

    steps: int = 50  # IG steps (Riemann trapezoid: Xplique's rule)
    samples: int = 50  # SmoothGrad noisy copies
    noise: float = 0.2  # SmoothGrad standard deviation (Xplique's default; bounds are [0, 1])
    rise_masks: int = 1000
    rise_grid: int = 7
    coalitions: int = 400  # KernelSHAP and LIME samples per image


@dataclass
class Setup:
    """A model, its images and targets, and the per-model choices of the comparison."""

    name: str
    classifier: Classifier
    peer_model: keras.Model  # a clone with the same weights: peers patch layers in place
    x: np.ndarray  # float32 [N, H, W, C] in [0, 1]
    target: np.ndarray  # int [N], the classes robustkit's classifier predicts
    layer: str  # CAM layer
    cell: int  # occlusion patch = stride, MuFidelity grid cell, KernelSHAP/LIME patch
    options: Options = field(default_factory=Options)

    @property
    def onehot(self) -> np.ndarray:
        return np.eye(self.classifier.num_classes, dtype=np.float32)[self.target]

    @property
    def shape(self) -> str:
        return "x".join(str(d) for d in self.x.shape[1:])


def clone(model: keras.Model) -> keras.Model:
    """A copy of the model with the same weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def make_setup(
    name: str, classifier: Classifier, x: np.ndarray, layer: str, cell: int, options: Options
) -> Setup:
    targets = classifier.predict_logits(x).argmax(axis=1)
    return Setup(name, classifier, clone(classifier.model), x, targets, layer, cell, options)


def mnist_setup(model_path: str, digits: np.ndarray, options: Options) -> Setup:
    """The shipped MNIST CNN; CAMs on its last convolution (11 x 11 x 64)."""
    classifier = load_classifier(model_path)
    x = digits[FIRST_DIGIT:, ..., None].astype(np.float32) / 255
    return make_setup("mnist_cnn", classifier, x, "conv2d_3", 4, options)


def rgb_digits(digits: np.ndarray, size: int) -> np.ndarray:
    """The digits at size x size, tinted (ink colour and a background ramp differ per channel
    so that no two channels are equal), float32 in [0, 1]."""
    gray = tf.image.resize(digits[..., None].astype(np.float32) / 255, (size, size)).numpy()
    ramp = np.linspace(0.0, 0.3, size, dtype=np.float32)[None, :, None, None]
    ink = np.array([1.0, 0.6, 0.2], np.float32)
    background = np.concatenate([0 * ramp, ramp, ramp[:, ::-1]], axis=-1)
    return np.clip(gray * ink + (1 - gray) * background, 0, 1).astype(np.float32)


def rgb_cnn_setup(
    digits: np.ndarray, labels: np.ndarray, train: slice, options: Options, size: int = 64
) -> Setup:
    """A small RGB CNN (three 3x3 convolutions, max pooling, dense head; logits) trained here
    for two epochs (seeded, about 20 s) on the tinted digits ``train`` (disjoint from the
    compared ones); CAMs on its last convolution (12 x 12 x 64 at 64 x 64)."""
    model = rgb_cnn(size)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(rgb_digits(digits[train], size), labels[train], batch_size=64, epochs=2, verbose=0)
    x = rgb_digits(digits[FIRST_DIGIT:], size)
    return make_setup("rgb_cnn", Classifier(model), x, "last_conv", 8, options)


def mobilenet_setup(digits: np.ndarray, options: Options, size: int = 64) -> Setup:
    """MobileNetV2 (``weights=None``: random, seeded weights; 10-class logit head) at 64 x 64;
    CAMs on block_6_expand_relu (8 x 8 x 192). Not trained: its softmax is flat (0.1 for every
    class), so Deletion and Score-CAM mean nothing on it; robustkit's guided backpropagation
    gates its ReLU6 layers (g [0 < z < 6] [g > 0]), which a peer's ReLU-only rule may not. For
    speed on a larger network."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None
    )
    x = rgb_digits(digits[FIRST_DIGIT:], size)
    return make_setup("mobilenetv2", Classifier(model), x, "block_6_expand_relu", 8, options)


# ----------------------------------------------------------------------------------------------
# The maps of each side, as 2-D maps [N, H, W] reduced over channels the way the peer does.


def upsample(cams: Any, setup: Setup) -> np.ndarray:
    """Low-resolution CAMs [N, h, w] upsampled bilinearly (robustkit's and the paper's way)."""
    cams = tf.convert_to_tensor(np.asarray(cams, np.float32))[..., None]
    return tf.image.resize(cams, setup.x.shape[1:3], method="bilinear").numpy()[..., 0]


def squeeze(maps: Any) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    return maps[..., 0] if maps.ndim == 4 else maps


class Ours:
    """robustkit's maps for a setup."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup

    def run(self, method: str, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The Attribution maps [N, H, W, C] of the named method with the shared options."""
        s, o = self.setup, self.setup.options
        options: dict[str, Any] = {"internal_batch_size": BATCH}
        if method == "integrated_gradients":
            options |= {"steps": o.steps, "rule": "riemann_trapezoid", "baseline": "black"}
        elif method in NOISY_GRADIENT_METHODS:
            options |= {"samples": o.samples, "noise": o.noise}
        elif method in ("grad_cam", "grad_cam_plus_plus", "layer_cam"):
            options |= {"layer": s.layer}
        elif method == "score_cam":
            options |= {"layer": s.layer, "objective": "probability", "baseline": "black"}
        elif method == "occlusion":
            options |= {"patch_size": s.cell, "stride": s.cell, "baseline": "black"}
        elif method == "rise":
            options |= {"samples": o.rise_masks, "grid_size": o.rise_grid, "baseline": "black"}
        elif method in ("kernel_shap", "lime"):
            options |= {"samples": o.coalitions, "patch_size": s.cell, "baseline": "black"}
        return rk.attribute(s.classifier, x, method, target, **options).maps

    def comparable(self, method: str, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """2-D maps reduced over channels as the peers reduce them: Saliency |g| max (Xplique's
        default, from Simonyan et al.), the channel mean otherwise."""
        maps = self.run("gradient" if method == "saliency" else method, x, target)
        return np.abs(maps).max(-1) if method == "saliency" else maps.mean(-1)


class PaperGradCAMPP(GradCAMPP):
    """Xplique's Grad-CAM++ with one line changed to the paper's eq. 19: the activations summed
    over positions in the alpha denominator (Xplique takes their mean)."""

    @staticmethod
    @tf.function
    def _compute_weights(feature_maps_gradients: tf.Tensor, feature_maps: tf.Tensor) -> tf.Tensor:
        square = tf.pow(feature_maps_gradients, 2)
        cube = tf.pow(feature_maps_gradients, 3)
        total = tf.reduce_sum(feature_maps, axis=(1, 2), keepdims=True)  # was reduce_mean
        denominator = 2.0 * square + cube * total
        denominator += tf.cast(denominator == 0, tf.float32) * GradCAMPP.EPSILON
        alphas = square / denominator * tf.nn.relu(feature_maps_gradients)
        weights = tf.reduce_mean(alphas, axis=(1, 2))
        return tf.reshape(weights, (weights.shape[0], 1, 1, weights.shape[-1]))


def grid_mapping(setup: Setup) -> Callable[[tf.Tensor], tf.Tensor]:
    """Xplique's map_to_interpret_space for robustkit's patch grid (the same features)."""
    height, width = setup.x.shape[1:3]
    labels = tf.constant(grid_labels(height, width, (setup.cell, setup.cell)))
    return lambda _: labels


XPLIQUE_METHODS = (
    "saliency",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "smoothgrad",
    "square_grad",
    "vargrad",
    "grad_cam",
    "grad_cam_plus_plus",
    "occlusion",
    "rise",
    "kernel_shap",
    "lime",
)


def xplique_explainer(setup: Setup, method: str) -> Any:
    """Xplique's explainer of the method, with the setup's options and robustkit's batch."""
    s, o, m = setup, setup.options, setup.peer_model
    black = np.zeros(s.x.shape[-1], np.float32)
    build = {
        "saliency": lambda: Saliency(m, batch_size=BATCH),
        "gradient_x_input": lambda: GradientInput(m, batch_size=BATCH),
        "guided_backprop": lambda: GuidedBackprop(clone(m), batch_size=BATCH),
        "integrated_gradients": lambda: IntegratedGradients(
            m, batch_size=BATCH, steps=o.steps, baseline_value=0.0
        ),
        "smoothgrad": lambda: SmoothGrad(m, batch_size=BATCH, nb_samples=o.samples, noise=o.noise),
        "square_grad": lambda: SquareGrad(m, batch_size=BATCH, nb_samples=o.samples, noise=o.noise),
        "vargrad": lambda: VarGrad(m, batch_size=BATCH, nb_samples=o.samples, noise=o.noise),
        "grad_cam": lambda: GradCAM(m, batch_size=BATCH, conv_layer=s.layer),
        "grad_cam_plus_plus": lambda: GradCAMPP(m, batch_size=BATCH, conv_layer=s.layer),
        "occlusion": lambda: Occlusion(
            m, batch_size=BATCH, patch_size=s.cell, patch_stride=s.cell, occlusion_value=0.0
        ),
        "rise": lambda: Rise(
            m,
            batch_size=BATCH,
            nb_samples=o.rise_masks,
            grid_size=o.rise_grid,
            preservation_probability=0.5,
            mask_value=0.0,
        ),
        "kernel_shap": lambda: KernelShap(
            m,
            batch_size=BATCH,
            map_to_interpret_space=grid_mapping(s),
            nb_samples=o.coalitions,
            ref_value=black,
        ),
        "lime": lambda: Lime(
            m,
            batch_size=BATCH,
            map_to_interpret_space=grid_mapping(s),
            nb_samples=o.coalitions,
            ref_value=black,
        ),
    }
    return build[method]()


class Peers:
    """The peers' explainers for a setup, built once (their compiled functions are kept on the
    explainer objects, so a new object per call would retrace)."""

    def __init__(self, setup: Setup) -> None:
        s, m = setup, setup.peer_model
        self.setup = setup
        self.xplique = {method: xplique_explainer(setup, method) for method in XPLIQUE_METHODS}
        self.paper_grad_cam_pp = PaperGradCAMPP(m, batch_size=BATCH, conv_layer=s.layer)
        self.vis = {
            "grad_cam_plus_plus": GradcamPlusPlus(m, clone=True),
            "layer_cam": Layercam(m, clone=True),
            "score_cam": Scorecam(m, clone=True),
        }

    def explain(self, method: str, x: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        """Xplique's map [N, H, W] as published."""
        if method == "gradient":
            method = "saliency"
        return squeeze(self.xplique[method].explain(x, onehot))

    def xplique_cam(self, explainer: GradCAM, x: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        """Xplique's own Grad-CAM(++) steps (gradient, weights, weighted sum + ReLU) at the
        layer's resolution, then upsampled bilinearly instead of bicubically."""
        cams = []
        for start in range(0, len(x), BATCH):
            batch = tf.constant(x[start : start + BATCH])
            labels = tf.constant(onehot[start : start + BATCH])
            activations, gradients = explainer._gradient(batch, labels)
            weights = explainer._compute_weights(gradients, activations)
            cams.append(GradCAM._apply_weights(weights, activations).numpy())
        return upsample(np.concatenate(cams), self.setup)

    def vis_cam(
        self,
        method: str,
        x: np.ndarray,
        target: np.ndarray,
        expand: bool = True,
        score: Any = None,
    ) -> np.ndarray:
        """tf-keras-vis's CAM [N, H, W]; ``expand=False``: at the layer's resolution,
        upsampled bilinearly here."""
        options: dict[str, Any] = {
            "penultimate_layer": self.setup.layer,
            "seek_penultimate_conv_layer": False,
            "expand_cam": expand,
        }
        if method == "score_cam":
            options["batch_size"] = BATCH
        score = score or CategoricalScore([int(t) for t in target])
        cams = np.asarray(self.vis[method](score, x, **options), np.float32)
        return cams if expand else upsample(cams, self.setup)

    def baseline_probability(self, target: np.ndarray) -> np.ndarray:
        """Softmax probability of each target on the black image, f(b) in Score-CAM's CIC."""
        black = np.zeros((1, *self.setup.x.shape[1:]), np.float32)
        probabilities = tf.nn.softmax(self.setup.peer_model(black)).numpy()[0]
        return probabilities[target]

    def variants(self, method: str) -> dict[tuple[str, str], Callable[[], np.ndarray]]:
        """(peer, variant) -> the peer's 2-D maps of the setup's images."""
        s = self.setup
        x, onehot, target = s.x, s.onehot, s.target
        out: dict[tuple[str, str], Callable[[], np.ndarray]] = {}
        if method in self.xplique:
            out["xplique", "as published"] = lambda: self.explain(method, x, onehot)
        if method == "grad_cam":
            out["xplique", "bilinear upsampling"] = lambda: self.xplique_cam(
                self.xplique["grad_cam"], x, onehot
            )
        if method == "grad_cam_plus_plus":
            out["xplique", "bilinear upsampling"] = lambda: self.xplique_cam(
                self.xplique["grad_cam_plus_plus"], x, onehot
            )
            out["xplique", "bilinear + paper's sum in alpha"] = lambda: self.xplique_cam(
                self.paper_grad_cam_pp, x, onehot
            )
        if method in self.vis:
            out["tf-keras-vis", "as published"] = lambda: self.vis_cam(method, x, target)
            out["tf-keras-vis", "bilinear upsampling"] = lambda: self.vis_cam(
                method, x, target, expand=False
            )
        if method == "score_cam":
            reference = self.baseline_probability(target)

            def increase(outputs: tf.Tensor) -> tf.Tensor:  # the paper's f(x_k) - f(b)
                picked = tf.gather(outputs, tf.constant(target), axis=1, batch_dims=1)
                return picked - tf.constant(reference, outputs.dtype)

            out["tf-keras-vis", "bilinear + paper's f(x_k) - f(b)"] = lambda: self.vis_cam(
                method, x, target, expand=False, score=increase
            )
            out["tf-keras-vis", "bilinear masks too + paper's f(x_k) - f(b)"] = lambda: (
                self.vis_cam_tf_upsampling(method, x, target, score=increase)
            )
        if method == "grad_cam_plus_plus":
            out["tf-keras-vis", "bilinear, vs ours + its alpha normalization"] = lambda: (
                self.vis_cam(method, x, target, expand=False),
                normalized_alpha_grad_cam_pp(s, x, target),
            )
        return out

    def vis_cam_tf_upsampling(
        self, method: str, x: np.ndarray, target: np.ndarray, score: Any
    ) -> np.ndarray:
        """:meth:`vis_cam` with ``expand=False`` and the activation maps that make ScoreCAM's
        masks upsampled by TensorFlow's bilinear resize instead of SciPy's linear zoom."""
        original = vis_scorecam.zoom

        def resize(activations: Any, factors: Any, **_: Any) -> np.ndarray:
            size = [round(n * f) for n, f in zip(activations.shape[1:3], factors[1:3], strict=True)]
            return tf.image.resize(activations, size, method="bilinear").numpy()

        vis_scorecam.zoom = resize
        try:
            return self.vis_cam(method, x, target, expand=False, score=score)
        finally:
            vis_scorecam.zoom = original


def normalized_alpha_grad_cam_pp(setup: Setup, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """robustkit's Grad-CAM++ (robustkit's activations and gradients, the paper's alpha) plus
    the one step tf-keras-vis adds: each channel's alphas divided by their sum over positions;
    [N, H, W], upsampled bilinearly."""
    layer = find_layer(setup.classifier, setup.layer)
    result = activation_gradients(
        setup.classifier, tf.constant(x), tf.constant(target, tf.int32), layer, loss="logit"
    )
    activation = result.activation.numpy().astype(np.float64)
    gradient = result.gradient.numpy().astype(np.float64)
    square = gradient**2
    denominator = 2 * square + activation.sum(axis=(1, 2), keepdims=True) * square * gradient
    alpha = np.where(denominator != 0, square / np.where(denominator != 0, denominator, 1), 0)
    total = alpha.sum(axis=(1, 2), keepdims=True)
    alpha = alpha / np.where(total != 0, total, 1)
    weights = (alpha * np.maximum(gradient, 0)).sum(axis=(1, 2), keepdims=True)
    return upsample(np.maximum((weights * activation).sum(-1), 0), setup)


# ----------------------------------------------------------------------------------------------
# Agreement


AGREEMENT_METHODS = (
    "saliency",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "grad_cam",
    "grad_cam_plus_plus",
    "layer_cam",
    "score_cam",
    "occlusion",
)
METRIC_METHODS = (
    "saliency",
    "gradient_x_input",
    "integrated_gradients",
    "grad_cam",
    "grad_cam_plus_plus",
    "occlusion",
)


def rank_agreement(ours: np.ndarray, theirs: np.ndarray) -> list[float]:
    """Per-image Spearman rank correlation of two stacks of maps [N, H, W] (1 where both maps
    are constant, e.g. both all zero; NaN where only one is)."""
    values = []
    for a, b in zip(ours, theirs, strict=True):
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            values.append(1.0)
        else:
            values.append(rk.spearman(a, b))
    return values


def summary(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "min": min(finite) if finite else float("nan"),
        "median": statistics.median(finite) if finite else float("nan"),
        "images": len(values),
        "undefined": len(values) - len(finite),
    }


def agreement_rows(setup: Setup, ours: Ours, peers: Peers) -> tuple[list[dict], dict]:
    """Spearman rows for each method and peer variant; and robustkit's comparable maps."""
    rows, maps = [], {}
    for method in AGREEMENT_METHODS:
        try:
            maps[method] = ours.comparable(method, setup.x, setup.target)
        except InputError as error:  # e.g. guided backpropagation on swish or GELU
            rows.append({"model": setup.name, "method": method, "skipped": str(error)})
            print(f"  {setup.name:11s} {method:22s} skipped: {error}", flush=True)
            continue
        for (peer, variant), theirs in peers.variants(method).items():
            theirs = theirs()
            reference = maps[method]
            if isinstance(theirs, tuple):  # (peer's maps, a recomputation to compare them with)
                theirs, reference = theirs
            row = summary(rank_agreement(reference, theirs))
            rows.append({"model": setup.name, "method": method, "peer": peer, "variant": variant})
            rows[-1].update(row)
            print(
                f"  {setup.name:11s} {method:22s} {peer:12s} {variant:34s} "
                f"min {row['min']:.4f} median {row['median']:.4f}",
                flush=True,
            )
    return rows, maps


def robustkit_subsets(setup: Setup, samples: int, fraction: float, seed: int = 0) -> np.ndarray:
    """bool [N, samples, H, W]: the pixels ``mu_fidelity`` removes in each of its subsets, drawn
    eagerly with the same keys as in its compiled loop (seed, image index, subset index)."""
    n, height, width = setup.x.shape[:3]
    labels = grid_labels(height, width, (setup.cell, setup.cell)).reshape(-1)
    count = int(labels.max()) + 1
    size = max(1, round(fraction * count))
    removed = np.empty((n, samples, height, width), bool)
    for image in range(n):
        keys = point_keys(
            tf.constant(seed, tf.int32),
            tf.constant(0, tf.int64),
            tf.fill([samples], image),
            tf.range(samples),
        )
        subsets = random_subsets(
            keys, tf.fill([samples], count), tf.fill([samples], size), tf.constant(count)
        ).numpy()
        removed[image] = subsets[:, labels].reshape(samples, height, width)
    return removed


class GivenSubsets:
    """Stands in for ``MuFidelity._perturb_samples``: Xplique's own masking formula on the given
    subsets (one image per call, in order) instead of its random ones."""

    def __init__(self, removed: np.ndarray, baseline: float = 0.0) -> None:
        self.removed, self.baseline, self.calls = removed, baseline, 0

    def __call__(self, inputs: tf.Tensor, nb_perturbations: int) -> tuple[tf.Tensor, tf.Tensor]:
        keep = 1.0 - self.removed[self.calls].astype(np.float32)
        self.calls += 1
        masks = tf.constant(keep[None, :nb_perturbations, :, :, None])  # [1, P, H, W, 1]
        perturbed = inputs[:, None] * masks + (1.0 - masks) * self.baseline
        return tf.reshape(perturbed, (-1, *inputs.shape[1:])), masks


class RecordedCorrelations:
    """Stands in for the ``spearmanr`` Xplique's MuFidelity calls: records Spearman and Pearson
    of each image's (drops, attribution sums) and hands back the chosen one."""

    def __init__(self) -> None:
        self.spearman: list[float] = []
        self.pearson: list[float] = []

    def __call__(self, drops: Any, shares: Any) -> tuple[float]:
        drops, shares = np.asarray(drops, np.float64), np.asarray(shares, np.float64)
        self.spearman.append(rk.spearman(drops, shares))
        self.pearson.append(float(np.corrcoef(drops, shares)[0, 1]))
        return (self.spearman[-1],)


def mu_fidelity_rows(setup: Setup, maps: dict[str, np.ndarray]) -> list[dict]:
    """MuFidelity of the same maps by robustkit and by Xplique's code on robustkit's subsets.

    Xplique draws its subsets with ``tf.random.uniform`` inside a compiled function (no seed
    argument) and keeps each grid cell with probability 1 - subset_percent, so neither its
    subsets nor their size can be set to robustkit's (exactly round(fraction * cells) cells,
    the paper's fixed |S|). The comparison therefore runs Xplique's ``MuFidelity.evaluate`` with
    ``_perturb_samples`` fed robustkit's subsets (:class:`GivenSubsets`) and its correlation
    recorded both ways (:class:`RecordedCorrelations`): Pearson, robustkit's and the paper's
    definition, must match robustkit's values; Spearman is what Xplique reports. Xplique on its
    own random subsets is given as its published mean.
    """
    height = setup.x.shape[1]
    removed = robustkit_subsets(setup, MUFIDELITY_SAMPLES, MUFIDELITY_FRACTION)
    rows = []
    for method in METRIC_METHODS:
        phi = maps[method][..., None]
        ours = rk.mu_fidelity(
            setup.classifier,
            setup.x,
            phi,
            setup.target,
            samples=MUFIDELITY_SAMPLES,
            subset_fraction=MUFIDELITY_FRACTION,
            patch_size=setup.cell,
            baseline="black",
            internal_batch_size=BATCH,
        ).values
        settings = {
            "batch_size": MUFIDELITY_SAMPLES,  # one image per pass over its subsets
            "grid_size": height // setup.cell,
            "subset_percent": MUFIDELITY_FRACTION,
            "baseline_mode": 0.0,
            "nb_samples": MUFIDELITY_SAMPLES,
        }
        metric = MuFidelity(setup.peer_model, setup.x, setup.onehot, **settings)
        metric._perturb_samples = GivenSubsets(removed)
        recorder, original = RecordedCorrelations(), xplique_fidelity.spearmanr
        xplique_fidelity.spearmanr = recorder
        try:
            metric.evaluate(phi)
        finally:
            xplique_fidelity.spearmanr = original
        tf.random.set_seed(0)
        published = MuFidelity(setup.peer_model, setup.x, setup.onehot, **settings).evaluate(phi)
        pearson, spearman = np.array(recorder.pearson), np.array(recorder.spearman)
        rows.append(
            {
                "model": setup.name,
                "method": method,
                "ours_mean": float(np.mean(ours)),
                "xplique_pearson_mean": float(np.mean(pearson)),
                "max_abs_difference": float(np.max(np.abs(ours - pearson))),
                "xplique_spearman_mean": float(np.mean(spearman)),
                "xplique_published_mean": float(published),
            }
        )
        r = rows[-1]
        print(
            f"  {setup.name:11s} MuFidelity {method:22s} ours {r['ours_mean']:.4f} xplique "
            f"(our subsets, Pearson) {r['xplique_pearson_mean']:.4f} max|diff| "
            f"{r['max_abs_difference']:.1e}; Spearman {r['xplique_spearman_mean']:.4f}; "
            f"xplique published {r['xplique_published_mean']:.4f}",
            flush=True,
        )
    return rows


def xplique_deletion(setup: Setup, phi: np.ndarray) -> np.ndarray:
    """Xplique's Deletion AUC of each image (one metric per image: its evaluate() averages
    the curve over the images)."""
    values = []
    for i in range(len(phi)):
        metric = Deletion(
            setup.peer_model,
            setup.x[i : i + 1],
            setup.onehot[i : i + 1],
            batch_size=BATCH,
            baseline_mode=0.0,
            steps=DELETION_STEPS,
            activation="softmax",
        )
        values.append(metric.evaluate(phi[i : i + 1]))
    return np.array(values)


def deletion_rows(setup: Setup, maps: dict[str, np.ndarray]) -> list[dict]:
    """Deletion AUC (softmax probability of the target, pixels to black, most salient first) of
    the same maps by both; raw maps, and with ties broken in reading order for both.

    The definitions match except for ties: robustkit orders tied pixels in reading order
    (stable sort), Xplique in whatever order NumPy's unstable argsort leaves them, reversed.
    The tie-broken maps (minus robustkit's rank of each pixel) give both the same order.
    """
    rows = []
    for method in METRIC_METHODS:
        phi = maps[method][..., None]
        ranked = -salience_ranks(phi, "sum").reshape(phi.shape).astype(np.float32)
        row = {"model": setup.name, "method": method}
        for name, given in (("raw", phi), ("tie_broken", ranked)):
            ours = rk.deletion_insertion(
                setup.classifier,
                setup.x,
                given,
                setup.target,
                steps=DELETION_STEPS,
                reduction="sum",
                deletion_baseline="black",
                internal_batch_size=BATCH,
            ).deletion_auc
            theirs = xplique_deletion(setup, given)
            row |= {
                f"{name}_ours_mean": float(np.mean(ours)),
                f"{name}_xplique_mean": float(np.mean(theirs)),
                f"{name}_max_abs_difference": float(np.max(np.abs(ours - theirs))),
            }
        rows.append(row)
        print(
            f"  {setup.name:11s} Deletion {method:22s} ours {row['raw_ours_mean']:.4f} xplique "
            f"{row['raw_xplique_mean']:.4f} max|diff| {row['raw_max_abs_difference']:.1e}; "
            f"ties broken: max|diff| {row['tie_broken_max_abs_difference']:.1e}",
            flush=True,
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Speed


SPEED_METHODS = (
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    "smoothgrad",
    "square_grad",
    "vargrad",
    "grad_cam",
    "grad_cam_plus_plus",
    "layer_cam",
    "score_cam",
    "occlusion",
    "rise",
    "kernel_shap",
    "lime",
)

NOISY_GRADIENT_METHODS = ("smoothgrad", "square_grad", "vargrad")  # noisy copies, one gradient each
GRADIENT_METHODS = (
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "integrated_gradients",
    *NOISY_GRADIENT_METHODS,
)


def forward_passes(setup: Setup, method: str, n: int) -> int:
    """Forward passes on batches of BATCH that the perturbation method's points make up
    (floor: the limit does at most the method's work)."""
    height, width = setup.x.shape[1:3]
    if method == "occlusion":
        points = math.ceil(height / setup.cell) * math.ceil(width / setup.cell)
    else:
        points = setup.options.rise_masks
    return n * points // BATCH


def gradient_limit(setup: Setup, method: str, n: int) -> Callable[[], None]:
    """The compiled forward+backward limit of a gradient method on the first n images: the
    method's points t = i * M + j (M samples or steps per image, 1 for a single gradient) in
    batches of BATCH, the last one partial, each one compiled input gradient of the target
    logit at its images x[t // M] (unperturbed: the same cost) and targets; guided
    backpropagation's guided gradient for it."""
    if method in NOISY_GRADIENT_METHODS:
        m = setup.options.samples
    else:
        m = setup.options.steps if method == "integrated_gradients" else 1
    full, rest = divmod(n * m, BATCH)
    taped = guided_input_gradients if method == "guided_backprop" else input_gradients
    limits = []
    for first, size, passes in ((0, BATCH, full), (n * m - rest, rest, 1)):
        if size and passes:
            image = np.arange(first, first + size) // m
            batch, labels = setup.x[image], setup.target[image].astype(np.int32)
            limits.append(
                compiled_limit(
                    setup.classifier, tf.constant(batch), tf.constant(labels), passes, True, taped
                )
            )
    return lambda: [limit() for limit in limits]


def speed_rows(
    setup: Setup, ours: Ours, peers: Peers, images: int, rounds: int, methods: tuple[str, ...]
) -> list[dict]:
    """Images/s of each side per method in interleaved rounds, and the ratios."""
    x, target, onehot = setup.x[:images], setup.target[:images], setup.onehot[:images]
    rows = []
    for method in methods:
        runs: dict[str, Callable[[], object]] = {
            "robustkit": lambda m=method: ours.run(m, x, target)
        }
        if method in peers.xplique or method == "gradient":
            runs["xplique"] = lambda m=method: peers.explain(m, x, onehot)
        if method in peers.vis:
            runs["tf-keras-vis"] = lambda m=method: peers.vis_cam(m, x, target)
        if method in ("occlusion", "rise"):
            batch = tf.constant(np.resize(setup.x, (BATCH, *setup.x.shape[1:])))
            labels = tf.constant(np.resize(setup.target, BATCH).astype(np.int32))
            passes = forward_passes(setup, method, len(x))
            runs["limit"] = compiled_limit(setup.classifier, batch, labels, passes, False)
        if method in GRADIENT_METHODS:
            runs["limit"] = gradient_limit(setup, method, len(x))
        try:
            times = interleaved(runs, rounds)
        except InputError as error:  # e.g. guided backpropagation on swish or GELU
            rows.append({"model": setup.name, "method": method, "skipped": str(error)})
            print(f"  {setup.name:11s} {method:20s} skipped: {error}", flush=True)
            continue
        row: dict[str, Any] = {"model": setup.name, "shape": setup.shape, "method": method}
        for name, measured in times.items():
            row[f"{name}_images_per_s"] = len(x) / statistics.median(w for w, _ in measured)
        line = f"  {setup.name:11s} {method:20s} robustkit {row['robustkit_images_per_s']:8.1f}/s"
        for name in times:
            if name == "robustkit":
                continue
            wall = statistics.median(ratios(times[name], times["robustkit"], 0))
            cpu = statistics.median(ratios(times[name], times["robustkit"], 1))
            row[f"ours_over_{name}_wall"], row[f"ours_over_{name}_cpu"] = wall, cpu
            line += (
                f" | {name} {row[f'{name}_images_per_s']:8.1f}/s ours/{name} {wall:6.2f} (wall) "
                f"{cpu:6.2f} (CPU)"
            )
        rows.append(row)
        print(line, flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# Memory

MEMORY_COUNTS = {  # method -> (the option that grows, its values)
    "integrated_gradients": ("steps", (50, 100, 200, 400)),
    "smoothgrad": ("samples", (50, 100, 200, 400)),
    "rise": ("rise_masks", (500, 1000, 2000, 4000)),
}


def extra_peak_mib(function: Callable[[], object]) -> float:
    """Peak MiB that TensorFlow's CPU allocator held during function() beyond what it held
    before (weights, cached constants)."""
    tf.config.experimental.reset_memory_stats(DEVICE)
    before = tf.config.experimental.get_memory_info(DEVICE)["current"]
    function()
    return (tf.config.experimental.get_memory_info(DEVICE)["peak"] - before) / 2**20


def memory_rows(setup: Setup, images: int) -> list[dict]:
    """Peak MiB held by TensorFlow's CPU allocator during one call beyond what it held before
    (after a first call that traces), as IG steps, SmoothGrad samples and RISE masks grow, for
    robustkit and Xplique on the same images."""
    x, target, onehot = setup.x[:images], setup.target[:images], setup.onehot[:images]
    rows = []
    for method, (option, counts) in MEMORY_COUNTS.items():
        row: dict[str, Any] = {"model": setup.name, "method": method, "option": option}
        for count in counts:
            grown = replace(setup, options=replace(setup.options, **{option: count}))
            ours, peer = Ours(grown), xplique_explainer(grown, method)
            runs = {
                "robustkit": lambda o=ours, m=method: o.run(m, x, target),
                "xplique": lambda e=peer: e.explain(x, onehot),
            }
            for name, run in runs.items():
                run()
                row.setdefault(name, []).append(extra_peak_mib(run))
        row["counts"] = list(counts)
        rows.append(row)
        for name in ("robustkit", "xplique"):
            print(
                f"  {setup.name:11s} memory {method:20s} {name:9s} {option} "
                + " ".join(f"{c}: {m:7.1f} MiB" for c, m in zip(counts, row[name], strict=True))
                + f"  (x{row[name][-1] / row[name][0]:.2f})",
                flush=True,
            )
    return rows


# ----------------------------------------------------------------------------------------------


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """One Markdown table, after a blank line: the header, its rule, then one line per row."""
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def print_markdown(report: dict[str, Any]) -> None:
    """The agreement, MuFidelity, memory and Deletion tables of a report, as Markdown."""
    if report.get("agreement"):
        print_table(
            ["model", "method", "peer", "variant", "Spearman min", "Spearman median"],
            [
                [r["model"], r["method"], "", f"skipped: {r['skipped']}", "", ""]
                if "skipped" in r
                else [
                    r["model"], r["method"], r["peer"], r["variant"],
                    f"{r['min']:.4f}", f"{r['median']:.4f}",
                ]
                for r in report["agreement"]
            ],
        )  # fmt: skip
    if report.get("mu_fidelity"):
        print_table(
            [
                "model", "method", "ours (Pearson)", "Xplique on our subsets (Pearson)",
                "max abs diff", "Xplique on our subsets (Spearman)", "Xplique published",
            ],
            [
                [
                    r["model"], r["method"], f"{r['ours_mean']:.4f}",
                    f"{r['xplique_pearson_mean']:.4f}", f"{r['max_abs_difference']:.1e}",
                    f"{r['xplique_spearman_mean']:.4f}", f"{r['xplique_published_mean']:.4f}",
                ]
                for r in report["mu_fidelity"]
            ],
        )  # fmt: skip
    if report.get("memory"):

        def grown(values: list[float]) -> str:
            return " / ".join(f"{m:.1f}" for m in values) + f" (x{values[-1] / values[0]:.2f})"

        print_table(
            ["model", "method", "grows", "robustkit extra peak MiB", "Xplique extra peak MiB"],
            [
                [
                    r["model"], r["method"],
                    f"{r['option']} " + " / ".join(str(c) for c in r["counts"]),
                    grown(r["robustkit"]), grown(r["xplique"]),
                ]
                for r in report["memory"]
            ],
        )  # fmt: skip
    if report.get("deletion"):
        print_table(
            [
                "model", "method", "ours", "Xplique", "max abs diff", "ties broken: ours",
                "Xplique", "max abs diff",
            ],
            [
                [
                    r["model"], r["method"], f"{r['raw_ours_mean']:.4f}",
                    f"{r['raw_xplique_mean']:.4f}", f"{r['raw_max_abs_difference']:.1e}",
                    f"{r['tie_broken_ours_mean']:.4f}", f"{r['tie_broken_xplique_mean']:.4f}",
                    f"{r['tie_broken_max_abs_difference']:.1e}",
                ]
                for r in report["deletion"]
            ],
        )  # fmt: skip


def print_speed_markdown(rows: list[dict[str, Any]]) -> None:
    """The speed table as Markdown: images/s per side, median per-round ratios (wall / CPU)."""
    table = []
    for r in rows:
        if "skipped" in r:
            table.append([r["model"], r["method"], "skipped", *[""] * 6])
            continue
        cells = [r["model"], r["method"], f"{r['robustkit_images_per_s']:.1f}"]
        for name in ("xplique", "tf-keras-vis", "limit"):
            if f"{name}_images_per_s" not in r:
                cells += ["", ""]
                continue
            cells.append(f"{r[f'{name}_images_per_s']:.1f}")
            # speed ratio = the other side's seconds / ours, per round (median)
            cells.append(f"{r[f'ours_over_{name}_wall']:.2f} / {r[f'ours_over_{name}_cpu']:.2f}")
        table.append(cells)
    print_table(
        [
            "model", "method", "robustkit img/s", "Xplique img/s", "ours/Xplique wall / CPU",
            "tf-keras-vis img/s", "ours/tf-keras-vis wall / CPU", "limit img/s",
            "ours/limit wall / CPU",
        ],
        table,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="examples/mnist_cnn.keras")
    parser.add_argument("--mnist", default="../shared/data/mnist")
    parser.add_argument(
        "--models",
        default="mnist_cnn,rgb_cnn",
        help="comma list of mnist_cnn, rgb_cnn, mobilenetv2",
    )
    parser.add_argument("--images", type=int, default=32, help="images per model and part")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds")
    parser.add_argument(
        "--methods",
        default=",".join(SPEED_METHODS),
        help="comma list of the methods the speed part times (default: all of them)",
    )
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--agreement-only", action="store_true")
    part.add_argument("--speed-only", action="store_true")
    part.add_argument("--memory-only", action="store_true")
    parser.add_argument("--memory-images", type=int, default=8)
    parser.add_argument("--json", help="write every figure to this JSON file")
    parser.add_argument("--steps", type=int, default=Options.steps)
    parser.add_argument("--samples", type=int, default=Options.samples)
    parser.add_argument("--rise-masks", type=int, default=Options.rise_masks)
    parser.add_argument("--coalitions", type=int, default=Options.coalitions)
    args = parser.parse_args()
    speed_methods = tuple(args.methods.split(","))
    unknown = sorted(set(speed_methods) - set(SPEED_METHODS))
    if unknown:
        parser.error(f"unknown --methods {unknown}; choose from {', '.join(SPEED_METHODS)}")
    keras.utils.disable_interactive_logging()  # tf-keras-vis's ScoreCAM calls model.predict

    options = Options(
        steps=args.steps,
        samples=args.samples,
        rise_masks=args.rise_masks,
        coalitions=args.coalitions,
    )
    digits, labels = load_mnist(args.mnist)
    digits, labels = digits[: FIRST_DIGIT + args.images], labels[: FIRST_DIGIT + args.images]
    builders = {
        "mnist_cnn": lambda: mnist_setup(args.model, digits, options),
        "rgb_cnn": lambda: rgb_cnn_setup(digits, labels, slice(0, FIRST_DIGIT), options),
        "mobilenetv2": lambda: mobilenet_setup(digits, options),
    }
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "xplique": xplique.__version__,
            "tf_keras_vis": tf_keras_vis.__version__,
        },
        "command": " ".join(sys.argv),
        "images": args.images,
        "batch": BATCH,
        "options": vars(options),
        "agreement": [],
        "mu_fidelity": [],
        "deletion": [],
        "speed": [],
        "memory": [],
    }
    print(
        f"{report['machine']}; TF {tf.__version__}, Keras {keras.__version__}, Xplique "
        f"{xplique.__version__}, tf-keras-vis {tf_keras_vis.__version__}; {args.images} MNIST "
        f"test digits from {FIRST_DIGIT}; batch {BATCH}; {vars(options)}",
        flush=True,
    )
    started = time.perf_counter()
    for name in args.models.split(","):
        setup = builders[name]()
        ours, peers = Ours(setup), Peers(setup)
        print(f"{name} ({setup.shape}, CAM layer {setup.layer}, cell {setup.cell}):", flush=True)
        everything = not (args.agreement_only or args.speed_only or args.memory_only)
        if everything or args.agreement_only:
            rows, maps = agreement_rows(setup, ours, peers)
            report["agreement"] += rows
            report["mu_fidelity"] += mu_fidelity_rows(setup, maps)
            report["deletion"] += deletion_rows(setup, maps)
        if everything or args.speed_only:
            report["speed"] += speed_rows(
                setup, ours, peers, args.images, args.rounds, speed_methods
            )
        if everything or args.memory_only:
            report["memory"] += memory_rows(setup, args.memory_images)
    print_markdown(report)
    if report["speed"]:
        print_speed_markdown(report["speed"])
    print(f"\n{time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
