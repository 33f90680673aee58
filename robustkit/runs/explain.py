"""Explain a folder of images: a heatmap, an overlay and the raw map per image, and a report with
the options and (for Integrated Gradients) the completeness deltas."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustkit.errors import InputError
from robustkit.io import ImageBatch, atomic_write
from robustkit.runs.folder import FolderReport, FolderRun, Progress, Row, RunInputs
from robustkit.runs.options import (
    ImageOptions,
    ModelOptions,
    ModelSource,
    OutputOptions,
    load_model,
)
from robustkit.runs.outputs import locked_output
from robustkit.saliency import METHOD_ALIASES, Attribution, attribute, get_method, heatmap, overlay
from robustkit.saliency import save as save_picture

JOURNAL = ".robustkit-saliency-journal.jsonl"
SUFFIXES = (".heatmap.png", ".overlay.png", ".npy")
SEEDED_METHODS = ("integrated_gradients", "smoothgrad")  # draw noise keyed by image index
TARGET_MODES = ("predicted", "label")


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


class ExplainRun(FolderRun):
    """Saliency maps for an image folder: heatmap and overlay PNGs and the raw map per image."""

    journal_name = JOURNAL
    status = "explained"

    def __init__(
        self,
        inputs: RunInputs,
        output: OutputOptions,
        *,
        method: str,
        options: dict[str, Any],
        target: str | int,
        render: RenderOptions,
    ) -> None:
        super().__init__(inputs, output, suffixes=SUFFIXES)
        self.method = method
        self.options = options
        self.target = target
        self.render = dataclasses.asdict(render)
        self.attribution_options: dict[str, Any] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "options": self.options,
            "target": self.target,
            "render": self.render,
        }

    def _name(self, index: int | None) -> str | None:
        return None if self.names is None or index is None else self.names[index]

    def process_batch(self, batch: ImageBatch) -> list[Row]:
        """Maps for one batch; writes heatmap, overlay and .npy per image; returns report rows.

        Random draws (SmoothGrad noise, a uniform IG baseline) are keyed by each image's index
        in the folder, so they do not depend on the batch size.
        """
        bounds = self.classifier.bounds
        x = batch.pixels(bounds)
        options = dict(self.options)
        if self.method in SEEDED_METHODS:
            options["first_index"] = self.first_index
        result: Attribution = attribute(
            self.classifier,
            x,
            self.method,
            batch.labels if self.target == "label" else self.target,
            **options,
        )
        self.attribution_options = {
            key: value for key, value in result.options.items() if key != "first_index"
        }
        labels = batch.labels
        rows = []
        for i, entry in enumerate(batch.entries):
            heatmap_name, overlay_name, npy_name = self.plan[entry.relative]
            save_picture(heatmap(result, index=i, **self.render), self.out / heatmap_name)
            save_picture(
                overlay(x[i], result, index=i, bounds=bounds, **self.render),
                self.out / overlay_name,
            )
            with atomic_write(self.out / npy_name, "wb") as stream:
                np.save(stream, result.maps[i])
            label = None if labels is None else int(labels[i])
            target = int(result.target[i])
            predicted = int(result.predicted[i])
            rows.append(
                {
                    "path": entry.relative,
                    "status": self.status,
                    "reason": "",
                    "heatmap": heatmap_name,
                    "overlay": overlay_name,
                    "map": npy_name,
                    "label": label,
                    "label_name": self._name(label),
                    "target": target,
                    "target_name": self._name(target),
                    "predicted": predicted,
                    "predicted_name": self._name(predicted),
                    "score": float(result.score[i]),
                    "baseline_score": None
                    if result.baseline_score is None
                    else float(result.baseline_score[i]),
                    "delta": None if result.delta is None else float(result.delta[i]),
                }
            )
        return rows

    def summarize(self, rows: list[Row]) -> dict[str, Any]:
        return {
            **summarize(rows),
            "method": self.method,
            "options": self.attribution_options or self.options,
            "target": self.target,
            "render": self.render,
        }


def summarize(rows: list[Row]) -> dict[str, Any]:
    """Counts, and for IG the completeness deltas, over the rows of a saliency report."""
    explained = [row for row in rows if row["status"] == ExplainRun.status]
    deltas = [abs(row["delta"]) for row in explained if row.get("delta") is not None]
    gaps = [
        abs(row["score"] - row["baseline_score"])
        for row in explained
        if row.get("baseline_score") is not None
    ]
    summary: dict[str, Any] = {
        "images_found": len(rows),
        "images_explained": len(explained),
        "images_skipped": len(rows) - len(explained),
    }
    if deltas:
        summary["ig_completeness"] = {
            "mean_abs_delta": float(np.mean(deltas)),
            "max_abs_delta": float(np.max(deltas)),
            "max_relative_delta": float(
                np.max(np.array(deltas) / np.maximum(np.array(gaps), 1e-12))
            ),
        }
    return summary


def _resolve_target(target: str | int, inputs: RunInputs) -> str | int:
    """The class explained: "predicted", "label" (needs labels) or a class index or name."""
    if target not in TARGET_MODES:
        return inputs.class_of(target, "target")
    if target == "label" and inputs.folder.label_source == "none":
        raise InputError(
            "The true labels cannot be explained (CLI: --target label needs labels): the images "
            "have none. Give a labels CSV, class subfolders or class names, or explain the "
            "predicted class (target 'predicted')."
        )
    return target


def explain_folder(
    model: ModelSource,
    images: str | os.PathLike[str],
    out: str | os.PathLike[str] | OutputOptions,
    method: str = "integrated_gradients",
    *,
    target: str | int = "predicted",
    render: RenderOptions | None = None,
    model_options: ModelOptions | None = None,
    image_options: ImageOptions | None = None,
    progress: Progress | None = None,
    **method_options: Any,
) -> FolderReport:
    """Explain the model's decision on every image under ``images``: under ``out``, at the same
    relative path, NAME.heatmap.png, NAME.overlay.png and NAME.npy (the raw map, float32
    [H, W, C]; Grad-CAM [H, W, 1]), plus report.json.

    Args:
        model, images, out, model_options, image_options, progress: as for
            :func:`~robustkit.runs.attack_folder`.
        method: a name of :data:`robustkit.saliency.METHODS` or an alias ("ig", "gradxinput",
            "gradcam").
        target: the class explained: "predicted", "label" (the true label) or a class index
            or name.
        render: how heatmaps and overlays are drawn.
        method_options: the method's keyword options (``steps``, ``samples``, ``seed``, ...).
            Random draws are keyed by each image's index in the folder, not by the batch.

    Returns:
        The report: per-image rows (target, prediction, score; for IG the completeness delta
        ``sum(map) - (f(x) - f(baseline))``) and the summary.
    """
    method = METHOD_ALIASES.get(method, method)
    get_method(method)
    render = render or RenderOptions()
    if method == "grad_cam" and render.view == "diverging":
        raise InputError(
            "Grad-CAM maps are non-negative; draw them with view 'sequential' "
            "(CLI: --view sequential)."
        )
    output = OutputOptions.of(out)
    image_options = image_options or ImageOptions()
    with locked_output(output.out, images):
        classifier = load_model(model, model_options)
        inputs = RunInputs.open(model, classifier, images, image_options)
        run = ExplainRun(
            inputs,
            output,
            method=method,
            options=method_options,
            target=_resolve_target(target, inputs),
            render=render,
        )
        return run.execute(progress)
