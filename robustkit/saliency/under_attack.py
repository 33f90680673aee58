"""Explanations under attack: how far an adversarial perturbation moves a saliency map.

For each image the map of the clean image and the map of its adversarial are compared by the
Spearman rank correlation of their pixel magnitudes and by the overlap of their top-k pixels
(Ghorbani et al. 2019, "Interpretation of neural networks is fragile"). A map that explains the
model's decision should not be rearranged by a perturbation too small to see; a high
correlation and overlap mean a stable explanation.

The attack is any callable ``(classifier, x, y, first_index=...) -> result with x_adv`` (an
attack of :mod:`robustkit.attacks`, e.g. ``PGD("linf", 8/255)``) or the adversarial images
themselves, so this module needs nothing from the attacks package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from robustkit.errors import InputError
from robustkit.io import to_uint8
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.checks import spearman
from robustkit.saliency.engine import check_classifier
from robustkit.saliency.registry import attribute, with_first_index
from robustkit.saliency.render import PANEL_GAP, heatmap, reduce_channels

ADVERSARIAL_TARGETS = ("same", "predicted")


class AttackLike(Protocol):
    """What :func:`explanation_shift` needs of an attack: images in, adversarials out."""

    def __call__(
        self, classifier: Classifier, x: Any, y: Any = None, *, first_index: int = 0
    ) -> Any:
        """A result whose ``x_adv`` holds the adversarial images [N, H, W, C]."""


@dataclass
class ExplanationShift:
    """Maps of N clean images and of their adversarials, and how much they agree.

    Attributes:
        clean, adversarial: the attributions of the clean and the adversarial images.
        x_adv: float32 [N, H, W, C] the adversarial images (pixel space).
        spearman: float [N] Spearman rank correlation of the two maps' pixel magnitudes
            (channel-reduced), in [-1, 1]; NaN where a map is constant.
        top_k_overlap: float [N] share of the k most salient pixels of the clean map that are
            also among the k most salient of the adversarial map, in [0, 1]; NaN where a map
            is constant.
        top_k_pixels: k, the number of pixels compared.
        options: how the comparison was made.
    """

    clean: Attribution
    adversarial: Attribution
    x_adv: np.ndarray
    spearman: np.ndarray
    top_k_overlap: np.ndarray
    top_k_pixels: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def flipped(self) -> np.ndarray:
        """bool [N]: the adversarial is classified differently from the clean image."""
        return self.adversarial.predicted != self.clean.predicted

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (maps and images left out, NaN as None)."""
        as_list = lambda a: [v if np.isfinite(v) else None for v in np.asarray(a).tolist()]  # noqa: E731
        return {
            "spearman": as_list(self.spearman),
            "top_k_overlap": as_list(self.top_k_overlap),
            "top_k_pixels": self.top_k_pixels,
            "clean_predicted": self.clean.predicted.tolist(),
            "adversarial_predicted": self.adversarial.predicted.tolist(),
            "target": self.clean.target.tolist(),
            "adversarial_target": self.adversarial.target.tolist(),
            "method": self.clean.method,
            "options": self.options,
        }


def check_top_k(top_k: Any) -> float:
    """``top_k`` as a share of the pixels in (0, 1], or InputError."""
    if isinstance(top_k, (bool, str)) or not 0 < float(top_k) <= 1:
        raise InputError(f"top_k must be a share of the pixels in (0, 1], got {top_k!r}.")
    return float(top_k)


def top_k_pixels(top_k: float, height: int, width: int) -> int:
    """k = max(1, round(top_k * H * W)) for a share ``top_k`` in (0, 1] of the pixels."""
    return max(1, int(np.rint(check_top_k(top_k) * height * width)))


def pixel_magnitudes(maps: Any, reduction: str = "abs-sum") -> np.ndarray:
    """|channel-reduced maps| flattened per image, float64 [N, H * W]."""
    values = np.asarray(maps)
    if values.ndim != 4:
        raise InputError(f"maps must be [N, H, W, C], got shape {values.shape}.")
    return np.abs(reduce_channels(values, reduction)).reshape(len(values), -1)


def compare_maps(
    clean: Any, adversarial: Any, *, top_k: float = 0.1, reduction: str = "abs-sum"
) -> tuple[np.ndarray, np.ndarray, int]:
    """(Spearman correlation [N], top-k overlap [N], k) of two sets of maps [N, H, W, C].

    Both measures work on the pixel magnitudes |reduce_channels(map, reduction)|. The top k
    pixels are the k largest magnitudes (ties broken in reading order); the overlap is the
    size of the intersection of the two top-k sets divided by k. Where either map is constant
    both measures are NaN (no pixel stands out).
    """
    first, second = pixel_magnitudes(clean, reduction), pixel_magnitudes(adversarial, reduction)
    if first.shape != second.shape:
        raise InputError(
            f"The maps differ in shape: {np.shape(clean)} and {np.shape(adversarial)}."
        )
    height, width = np.shape(clean)[1:3]
    k = top_k_pixels(top_k, height, width)
    correlations = np.array([spearman(a, b) for a, b in zip(first, second, strict=True)])
    top_first = np.argsort(-first, axis=1, kind="stable")[:, :k]
    top_second = np.argsort(-second, axis=1, kind="stable")[:, :k]
    overlap = np.array(
        [np.intersect1d(a, b).size / k for a, b in zip(top_first, top_second, strict=True)]
    )
    constant = (np.ptp(first, axis=1) == 0) | (np.ptp(second, axis=1) == 0)
    overlap[constant] = np.nan
    return correlations, overlap, k


def explanation_shift(
    classifier: Classifier,
    x: Any,
    y: Any = None,
    method: str = "gradient",
    attack: AttackLike | Any = None,
    *,
    target: Any = None,
    top_k: float = 0.1,
    reduction: str = "abs-sum",
    adversarial_target: str = "same",
    first_index: int = 0,
    clean: Attribution | None = None,
    **method_options: Any,
) -> ExplanationShift:
    """Explain x and its adversarials with ``method`` and measure how far the maps moved.

    Args:
        x: clean images [N, H, W, C] in the classifier's bounds; y: their labels [N] for the
            attack (None: the attack uses the model's predictions).
        method: a name of :data:`~robustkit.saliency.METHODS` or an alias.
        attack: an attack (``PGD("linf", 8/255)``, any :class:`AttackLike`) or the adversarial
            images [N, H, W, C] themselves.
        target: the class the clean maps explain, as for the methods (default: predicted).
        top_k: share of the pixels in the top-k sets (0.1: the top 10% by |map|).
        reduction: channel reduction before the comparison (see
            :func:`~robustkit.saliency.render.reduce_channels`).
        adversarial_target: "same" (the adversarial map explains the clean map's class: the
            same function, only the input moved) or "predicted" (the adversarial's own
            predicted class).
        first_index: index of x[0] in a longer stream; keys the attack's and a seeded
            method's random draws (results do not depend on how a data set is batched).
        clean: the clean maps when they are already computed (the method's maps of x with
            these options); they are not computed again.
        method_options: the method's options, the same for both maps.
    """
    classifier = check_classifier(classifier)
    if adversarial_target not in ADVERSARIAL_TARGETS:
        raise InputError(
            f"adversarial_target must be one of {ADVERSARIAL_TARGETS}, got {adversarial_target!r}."
        )
    if attack is None:
        raise InputError("Give an attack (e.g. robustkit.attacks.PGD) or the adversarial images.")
    x = classifier.validate_images(x)
    if callable(attack):
        x_adv = np.asarray(attack(classifier, x, y, first_index=first_index).x_adv, np.float32)
    else:
        x_adv = np.asarray(attack, np.float32)
    if x_adv.shape != tuple(x.shape):
        raise InputError(f"The adversarial images are {x_adv.shape}, the images {tuple(x.shape)}.")
    options = with_first_index(method, method_options, first_index)
    if clean is None:
        clean = attribute(classifier, x, method, target, **options)
    moved_target = clean.target if adversarial_target == "same" else None
    adversarial = attribute(classifier, x_adv, method, moved_target, **options)
    correlations, overlap, k = compare_maps(
        clean.maps, adversarial.maps, top_k=top_k, reduction=reduction
    )
    return ExplanationShift(
        clean=clean,
        adversarial=adversarial,
        x_adv=x_adv,
        spearman=correlations,
        top_k_overlap=overlap,
        top_k_pixels=k,
        options={
            "top_k": float(top_k),
            "reduction": reduction,
            "adversarial_target": adversarial_target,
            "first_index": int(first_index),
        },
    )


def importance_moved(
    clean_map: Any, adversarial_map: Any, reduction: str = "abs-sum"
) -> np.ndarray:
    """float64 [H, W]: the adversarial's share of the total |map| at each pixel minus the clean
    image's (each map [H, W, C] divided by its sum, so only where importance moved shows, not a
    change of the map's overall size); all-zero maps count as zero shares."""

    def shares(values: Any) -> np.ndarray:
        magnitudes = np.abs(reduce_channels(values, reduction))
        total = magnitudes.sum()
        return magnitudes / total if total > 0 else magnitudes

    return shares(adversarial_map) - shares(clean_map)


def _rgb(image: Any, bounds: tuple[float, float]) -> np.ndarray:
    codes = to_uint8(image, bounds)
    return np.repeat(codes, 3, axis=-1) if codes.shape[-1] == 1 else codes


def shift_panel(
    image: Any,
    adversarial_image: Any,
    clean_map: Any,
    adversarial_map: Any,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    reduction: str | None = None,
    view: str = "sequential",
    percentile: float = 99.0,
    scale: int = 1,
) -> Image.Image:
    """Five tiles side by side: the image, its adversarial, the clean map, the adversarial map
    (each drawn as :func:`~robustkit.saliency.heatmap`) and :func:`importance_moved` (diverging:
    red where importance grew, blue where it shrank), separated by white gaps.

    ``image``, ``adversarial_image``: float [H, W, C] in ``bounds``; maps [H, W, C'].
    """
    draw = {"reduction": reduction, "view": view, "percentile": percentile}
    moved = importance_moved(clean_map, adversarial_map, reduction or "abs-sum")
    tiles = [
        _rgb(image, bounds),
        _rgb(adversarial_image, bounds),
        np.asarray(heatmap(clean_map, **draw)),
        np.asarray(heatmap(adversarial_map, **draw)),
        np.asarray(heatmap(moved, view="diverging", reduction="sum", percentile=percentile)),
    ]
    if any(tile.shape != tiles[0].shape for tile in tiles):
        raise InputError("The images and maps of a panel must have the same height and width.")
    gap = np.full((tiles[0].shape[0], PANEL_GAP, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    picture = Image.fromarray(np.concatenate(row, axis=1), "RGB")
    if int(scale) < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale!r}.")
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
