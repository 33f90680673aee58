"""The per-method figures of an explain run's summary: IG completeness, the metrics' and the
explanation shift's means over the explained images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def finite_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None and NaN left out); None when there are none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def ig_completeness(entries: list[dict[str, Any]]) -> dict[str, float] | None:
    """IG completeness over one method's entries: mean and max |delta|, max relative to
    |f(x) - f(baseline)|; None for a method without deltas."""
    with_delta = [e for e in entries if e.get("delta") is not None]
    if not with_delta:
        return None
    deltas = np.abs([e["delta"] for e in with_delta])
    gaps = np.abs([e["score"] - e["baseline_score"] for e in with_delta])
    return {
        "mean_abs_delta": float(np.mean(deltas)),
        "max_abs_delta": float(np.max(deltas)),
        "max_relative_delta": float(np.max(deltas / np.maximum(gaps, 1e-12))),
    }


def method_figures(
    entries: list[dict[str, Any]], options: dict[str, Any], *, metrics: bool, under_attack: bool
) -> dict[str, Any]:
    """One method's summary over its per-image ``entries``: the options it ran with, IG
    completeness (methods with deltas), the mean of each metric (with ``metrics``) and of the
    shift's Spearman correlation and top-k overlap (with ``under_attack``)."""
    figures: dict[str, Any] = {"options": options}
    completeness = ig_completeness(entries)
    if completeness:
        figures["ig_completeness"] = completeness
    if metrics:
        names = entries[0]["metrics"] if entries else {}
        figures["metrics"] = {
            name: finite_mean([e["metrics"][name] for e in entries]) for name in names
        }
    if under_attack:
        figures["shift"] = {
            key: finite_mean([e[key] for e in entries]) for key in ("spearman", "top_k_overlap")
        }
    return figures
