"""Saliency maps on taped input gradients, their rendering and sanity checks.

Methods return an :class:`Attribution`; :mod:`robustkit.saliency.render` turns maps into
Pillow images and PNGs; :mod:`robustkit.saliency.checks` holds the randomization test and the
deletion/insertion curves.
"""

from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import BASELINE_KINDS, gaussian_blur, make_baseline
from robustkit.saliency.checks import (
    PerturbationCurves,
    RandomizationResult,
    deletion_insertion,
    randomization_check,
    spearman,
)
from robustkit.saliency.engine import OBJECTIVES
from robustkit.saliency.gradcam import find_layer, grad_cam
from robustkit.saliency.methods import (
    AGGREGATIONS,
    METHOD_ALIASES,
    METHODS,
    RULES,
    attribute,
    get_method,
    gradient,
    gradient_x_input,
    integrated_gradients,
    quadrature,
    smoothgrad,
)
from robustkit.saliency.render import (
    REDUCTIONS,
    VIEWS,
    heatmap,
    overlay,
    panel,
    reduce_channels,
    save,
    scale_map,
)

__all__ = [
    "AGGREGATIONS",
    "BASELINE_KINDS",
    "METHODS",
    "METHOD_ALIASES",
    "OBJECTIVES",
    "REDUCTIONS",
    "RULES",
    "VIEWS",
    "Attribution",
    "PerturbationCurves",
    "RandomizationResult",
    "attribute",
    "deletion_insertion",
    "find_layer",
    "gaussian_blur",
    "get_method",
    "grad_cam",
    "gradient",
    "gradient_x_input",
    "heatmap",
    "integrated_gradients",
    "make_baseline",
    "overlay",
    "panel",
    "quadrature",
    "randomization_check",
    "reduce_channels",
    "save",
    "scale_map",
    "smoothgrad",
    "spearman",
]
