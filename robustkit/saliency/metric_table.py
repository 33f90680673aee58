"""Every saliency metric by name, as per-image columns: what a folder run's report tabulates.

:func:`metric_table` runs the chosen metrics on one batch of maps and returns one float64 [N]
column per reported quantity (:data:`METRIC_COLUMNS`): a metric with two figures (average and
max sensitivity, deletion and insertion) gives two columns. Random draws are keyed by the seed
and ``first_index`` + image index, so a folder's numbers do not depend on its batching.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robustkit.errors import InputError
from robustkit.models import Classifier
from robustkit.saliency.attribution import Attribution
from robustkit.saliency.checks import deletion_insertion, randomization_check
from robustkit.saliency.metrics import complexity, mu_fidelity, random_logit, sparseness, stability
from robustkit.saliency.registry import attribute
from robustkit.saliency.road import road

# metric name -> the columns it reports (lower or higher is better: see each metric's docs)
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "mu_fidelity": ("mu_fidelity",),
    "stability": ("avg_sensitivity", "max_sensitivity"),
    "sparseness": ("sparseness",),
    "complexity": ("complexity",),
    "random_logit": ("random_logit",),
    "road": ("road_morf", "road_lerf"),
    "deletion_insertion": ("deletion_auc", "insertion_auc"),
    "randomization": ("randomization",),
}
METRICS = tuple(METRIC_COLUMNS)


def resolve_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """The metric names asked for: "all", a comma-separated string, a list, or None (none)."""
    if metrics is None or (not isinstance(metrics, str) and len(metrics) == 0):
        return []
    if isinstance(metrics, str):
        names = list(METRICS) if metrics == "all" else [m.strip() for m in metrics.split(",")]
    else:
        names = list(metrics)
    unknown = [name for name in names if name not in METRIC_COLUMNS]
    if unknown:
        raise InputError(f"Unknown saliency metric {unknown!r}; use 'all' or {METRICS}.")
    return list(dict.fromkeys(names))


def metric_table(
    classifier: Classifier,
    x: Any,
    attribution: Attribution,
    method: str,
    metrics: Sequence[str],
    *,
    method_options: Mapping[str, Any] | None = None,
    samples: int | None = None,
    seed: int = 0,
    first_index: int = 0,
) -> dict[str, np.ndarray]:
    """The named metrics of ``attribution`` (the maps ``method`` gave for x [N, H, W, C]).

    Args:
        method, method_options: how the maps were made; the metrics that explain again
            (stability, random_logit, randomization) rerun the method with exactly these
            options (a seeded method keeps its own draws).
        metrics: names of :data:`METRIC_COLUMNS`.
        samples: subsets (MuFidelity) and perturbed copies (stability) per image; None: each
            metric's default.
        seed, first_index: the metrics' own random draws, keyed per image.

    Returns:
        column name -> float64 [N] (NaN where undefined), in the order of ``metrics``.
    """
    bound_options = dict(method_options or {})

    def explain(model: Classifier, images: Any, target: Any = None) -> Attribution:
        return attribute(model, images, method, target, **bound_options)

    sampled = {} if samples is None else {"samples": samples}
    keyed = {"seed": seed, "first_index": first_index}
    targets = attribution.target
    columns: dict[str, np.ndarray] = {}
    for name in metrics:
        if name == "mu_fidelity":
            result = mu_fidelity(classifier, x, attribution, **sampled, **keyed)
            values: tuple[Any, ...] = (result.values,)
        elif name == "stability":
            result = stability(classifier, x, explain, targets, **sampled, **keyed)
            values = (result.values, result.extra["max_sensitivity"])
        elif name == "sparseness":
            values = (sparseness(attribution),)
        elif name == "complexity":
            values = (complexity(attribution),)
        elif name == "random_logit":
            values = (random_logit(classifier, x, explain, targets, **keyed).values,)
        elif name == "road":
            curves = road(classifier, x, attribution, **keyed)
            values = (curves.morf.mean(axis=1), curves.lerf.mean(axis=1))
        elif name == "deletion_insertion":
            curves = deletion_insertion(classifier, x, attribution, seed=seed)
            values = (curves.deletion_auc, curves.insertion_auc)
        elif name == "randomization":
            check = randomization_check(classifier, x, explain, targets, seed=seed)
            values = (check.correlations[-1],)
        else:
            raise InputError(f"Unknown saliency metric {name!r}; use one of {METRICS}.")
        for column, value in zip(METRIC_COLUMNS[name], values, strict=True):
            columns[column] = np.asarray(value, np.float64)
    return columns
