"""Saliency maps (gradient, CAM and perturbation methods), their rendering and checks.

Methods return an :class:`Attribution` and are reached by name through :func:`attribute`
(see :data:`METHODS`); :mod:`robustkit.saliency.render` turns maps into Pillow images and PNGs;
:mod:`robustkit.saliency.checks` holds the randomization test and the deletion/insertion
curves, :mod:`robustkit.saliency.metrics` and :mod:`robustkit.saliency.road` the faithfulness,
robustness and complexity metrics (:mod:`robustkit.saliency.metric_table` runs them by name), and
:mod:`robustkit.saliency.under_attack` compares the maps of clean and adversarial images.
"""

from robustkit.saliency.attribution import Attribution
from robustkit.saliency.baselines import BASELINE_KINDS, gaussian_blur, make_baseline
from robustkit.saliency.cam import grad_cam_plus_plus, layer_cam, score_cam
from robustkit.saliency.checks import (
    PerturbationCurves,
    RandomizationResult,
    deletion_insertion,
    randomization_check,
    spearman,
)
from robustkit.saliency.coalitions import kernel_shap, lime
from robustkit.saliency.engine import OBJECTIVES
from robustkit.saliency.gradcam import find_layer, grad_cam
from robustkit.saliency.methods import (
    AGGREGATIONS,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
    square_grad,
    vargrad,
)
from robustkit.saliency.metric_table import METRIC_COLUMNS, metric_table
from robustkit.saliency.metrics import (
    MetricResult,
    complexity,
    mu_fidelity,
    random_logit,
    sparseness,
    stability,
)
from robustkit.saliency.perturbation import occlusion, rise
from robustkit.saliency.quadrature import RULES, quadrature
from robustkit.saliency.registry import (
    METHOD_ALIASES,
    METHODS,
    attribute,
    get_method,
    method_keywords,
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
from robustkit.saliency.road import RoadCurves, noisy_linear_imputation, road
from robustkit.saliency.under_attack import (
    ExplanationShift,
    compare_maps,
    explanation_shift,
    shift_panel,
)

__all__ = [
    "AGGREGATIONS",
    "BASELINE_KINDS",
    "METHODS",
    "METHOD_ALIASES",
    "METRIC_COLUMNS",
    "OBJECTIVES",
    "REDUCTIONS",
    "RULES",
    "VIEWS",
    "Attribution",
    "ExplanationShift",
    "MetricResult",
    "PerturbationCurves",
    "RandomizationResult",
    "RoadCurves",
    "attribute",
    "compare_maps",
    "complexity",
    "deletion_insertion",
    "explanation_shift",
    "find_layer",
    "gaussian_blur",
    "get_method",
    "grad_cam",
    "grad_cam_plus_plus",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "heatmap",
    "integrated_gradients",
    "kernel_shap",
    "layer_cam",
    "lime",
    "make_baseline",
    "method_keywords",
    "metric_table",
    "mu_fidelity",
    "noisy_linear_imputation",
    "occlusion",
    "overlay",
    "panel",
    "quadrature",
    "random_logit",
    "randomization_check",
    "reduce_channels",
    "rise",
    "road",
    "save",
    "scale_map",
    "score_cam",
    "shift_panel",
    "smoothgrad",
    "sparseness",
    "spearman",
    "square_grad",
    "stability",
    "vargrad",
]
