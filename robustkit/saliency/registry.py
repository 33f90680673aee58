"""Every attribution method by name: :data:`METHODS`, its aliases, and :func:`attribute`."""

from __future__ import annotations

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
