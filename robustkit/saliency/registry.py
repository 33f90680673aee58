"""Every attribution method by name: :data:`METHODS`, its aliases, and :func:`attribute`."""

from __future__ import annotations

import inspect
from typing import Any

from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.cam import grad_cam_plus_plus, layer_cam, score_cam
from robustkit.saliency.coalitions import kernel_shap, lime
from robustkit.saliency.gradcam import grad_cam
from robustkit.saliency.methods import (
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
    square_grad,
    vargrad,
)
from robustkit.saliency.perturbation import occlusion, rise

METHODS = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "guided_backprop": guided_backprop,
    "smoothgrad": smoothgrad,
    "square_grad": square_grad,
    "vargrad": vargrad,
    "integrated_gradients": integrated_gradients,
    "grad_cam": grad_cam,
    "grad_cam_plus_plus": grad_cam_plus_plus,
    "layer_cam": layer_cam,
    "score_cam": score_cam,
    "occlusion": occlusion,
    "rise": rise,
    "kernel_shap": kernel_shap,
    "lime": lime,
}
METHOD_ALIASES = {
    "ig": "integrated_gradients",
    "gradxinput": "gradient_x_input",
    "gradcam": "grad_cam",
    "gradcam++": "grad_cam_plus_plus",
    "layercam": "layer_cam",
    "scorecam": "score_cam",
    "kernelshap": "kernel_shap",
    "squaregrad": "square_grad",
    "guided": "guided_backprop",
}
# methods that forward their options to another, less the ones they fix
FORWARDED_OPTIONS = {
    "square_grad": ("smoothgrad", {"aggregation"}),
    "vargrad": ("smoothgrad", {"aggregation"}),
}


def get_method(method: str | Any) -> Any:
    """The attribution function for a name in :data:`METHODS` or :data:`METHOD_ALIASES`, or the
    given callable ``(classifier, x, target, **options) -> Attribution``."""
    if callable(method):
        return method
    name = METHOD_ALIASES.get(method, method)
    if name not in METHODS:
        known = sorted([*METHODS, *METHOD_ALIASES])
        raise InputError(f"Unknown saliency method {method!r}; use one of {known}.")
    return METHODS[name]


def method_keywords(method: str) -> frozenset[str]:
    """The keyword options the named method (or alias) takes, e.g. {"steps", "seed", ...}."""
    name = METHOD_ALIASES.get(method, method)
    get_method(name)
    if name in FORWARDED_OPTIONS:
        forwarded_to, fixed = FORWARDED_OPTIONS[name]
        return method_keywords(forwarded_to) - fixed
    parameters = inspect.signature(METHODS[name]).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def with_first_index(method: str, options: dict[str, Any], first_index: int) -> dict[str, Any]:
    """``options`` plus ``first_index`` when the method keys its random draws by image index
    (SmoothGrad, RISE, ...), so a folder's maps do not depend on how it is batched."""
    if "first_index" not in method_keywords(method):
        return dict(options)
    return {**options, "first_index": int(first_index)}


def attribute(
    classifier: Classifier,
    x: Any,
    method: str = "integrated_gradients",
    target: Any = None,
    **options: Any,
) -> Attribution:
    """Run the named method (see :data:`METHODS` and :data:`METHOD_ALIASES`) with its keyword
    options."""
    return get_method(method)(classifier, x, target, **options)
