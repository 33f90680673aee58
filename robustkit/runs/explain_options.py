"""How a saliency folder run is configured: the methods (resolved, checked against the model,
each with its share of the options), how maps are drawn, and the explanations under attack."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from robustkit.errors import InputError
from robustkit.gradients import guided_relu_layers
from robustkit.models import Classifier
from robustkit.saliency import METHOD_ALIASES, METHODS
from robustkit.saliency.gradcam import feature_map_layer
from robustkit.saliency.registry import get_method, method_keywords
from robustkit.saliency.under_attack import ADVERSARIAL_TARGETS, check_top_k

logger = logging.getLogger(__name__)

NONNEGATIVE_METHODS = ("grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam")


@dataclass(frozen=True)
class RenderOptions:
    """How maps are drawn as heatmap and overlay PNGs (see :func:`robustkit.saliency.heatmap`).

    Attributes:
        view: "sequential" (magnitudes, fire colormap) or "diverging" (signed, blue-black-red).
        reduction: channel reduction; None: abs-sum for sequential, sum for diverging.
        percentile: values above this percentile are shown at full strength.
        scale: the PNGs are this many times the image size.
    """

    view: str = "sequential"
    reduction: str | None = None
    percentile: float = 99.0
    scale: int = 1


@dataclass(frozen=True)
class UnderAttack:
    """Explanations under attack (see :func:`robustkit.saliency.explanation_shift`).

    Attributes:
        attack: an attack of :mod:`robustkit.attacks`, e.g. ``PGD("linf", 8/255,
            quantize=255)``; each image is attacked once (with its label when the images have
            labels, else with the model's prediction) and every method explains the same
            adversarial.
        top_k: share of the pixels in the top-k sets compared (0.1: the top 10% by |map|).
        adversarial_target: "same" (the adversarial map explains the clean map's class) or
            "predicted" (the adversarial's own prediction).
    """

    attack: Any
    top_k: float = 0.1
    adversarial_target: str = "same"

    def __post_init__(self) -> None:
        if self.adversarial_target not in ADVERSARIAL_TARGETS:
            raise InputError(
                f"adversarial_target must be one of {ADVERSARIAL_TARGETS}, got "
                f"{self.adversarial_target!r}."
            )
        check_top_k(self.top_k)

    def settings(self) -> dict[str, Any]:
        """The attack's configuration and the comparison's options (JSON-able)."""
        return {
            "attack": self.attack.config,
            "top_k": float(self.top_k),
            "adversarial_target": self.adversarial_target,
        }


def resolve_methods(method: str | Sequence[str]) -> list[str]:
    """Method names (aliases resolved): one name, "all" (every method of
    :data:`~robustkit.saliency.METHODS`), a comma-separated string or a list of names."""
    if isinstance(method, str):
        names = list(METHODS) if method == "all" else [m.strip() for m in method.split(",")]
    else:
        names = list(method)
    for name in names:
        get_method(name)
    return list(dict.fromkeys(METHOD_ALIASES.get(name, name) for name in names))


def applicable_methods(
    classifier: Classifier, methods: Sequence[str], options: dict[str, dict[str, Any]]
) -> list[str]:
    """The methods that can explain ``classifier`` (guided backpropagation needs ReLU-family
    layers and no swish, GELU, ...; the CAM methods a feature-map layer); each one left out is
    logged with the reason."""
    usable = []
    for method in methods:
        try:
            if method == "guided_backprop":
                guided_relu_layers(classifier)
            elif method in NONNEGATIVE_METHODS:
                feature_map_layer(classifier, options[method].get("layer"))
        except InputError as error:
            logger.warning("method %s left out: %s", method, error)
            continue
        usable.append(method)
    if not usable:
        raise InputError("None of the saliency methods can explain this model.")
    return usable


def route_options(methods: Sequence[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's share of ``options``: the keywords it takes. An option that none of
    ``methods`` takes is an InputError naming the methods that do."""
    keywords = {method: method_keywords(method) for method in methods}
    for key in options:
        if not any(key in taken for taken in keywords.values()):
            takers = [name for name in METHODS if key in method_keywords(name)]
            raise InputError(
                f"Option {key!r} (CLI: --{key.replace('_', '-')}) applies to "
                f"{', '.join(takers) or 'no method'} only, not to {', '.join(methods)}."
            )
    return {m: {k: v for k, v in options.items() if k in keywords[m]} for m in methods}
