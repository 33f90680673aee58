"""Explain a folder of images with one, several or all saliency methods: a heatmap, an overlay
and the raw map per image and method, optionally the saliency metrics and the explanations
under attack, and a report (report.json, and report.html on request)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from robustkit.errors import InputError
from robustkit.io import ImageBatch, atomic_write
from robustkit.runs.explain_options import (
    NONNEGATIVE_METHODS,
    RenderOptions,
    UnderAttack,
    applicable_methods,
    resolve_methods,
    route_options,
)
from robustkit.runs.explain_summary import finite_mean, method_figures
from robustkit.runs.folder import REPORT_JSON, FolderReport, FolderRun, Progress, Row, RunInputs
from robustkit.runs.html import REPORT_HTML, saliency_page
from robustkit.runs.options import (
    ImageOptions,
    ModelOptions,
    ModelSource,
    OutputOptions,
    load_model,
)
from robustkit.runs.outputs import locked_output
from robustkit.saliency import Attribution, attribute, heatmap, overlay
from robustkit.saliency import save as save_picture
from robustkit.saliency.metric_table import metric_table, resolve_metrics
from robustkit.saliency.registry import with_first_index
from robustkit.saliency.under_attack import explanation_shift, shift_panel

JOURNAL = ".robustkit-saliency-journal.jsonl"
# the files written per image and method, by kind; the under-attack kinds only with an attack
SUFFIXES = {"heatmap": ".heatmap.png", "overlay": ".overlay.png", "map": ".npy"}
ATTACK_SUFFIXES = {"adversarial_map": ".adversarial.npy", "shift": ".shift.png"}
TARGET_MODES = ("predicted", "label")


def _item(values: np.ndarray | None, index: int) -> float | None:
    """values[index] as a float, None when there are no values."""
    return None if values is None else float(values[index])


class ExplainRun(FolderRun):
    """Saliency maps for an image folder: heatmap and overlay PNGs and the raw map per image
    and method; with ``metrics``, the metric values; with ``under_attack``, the adversarial's
    map and a panel PNG and the maps' agreement."""

    journal_name = JOURNAL
    status = "explained"

    def __init__(
        self,
        inputs: RunInputs,
        output: OutputOptions,
        *,
        methods: Sequence[str],
        options: dict[str, dict[str, Any]],
        target: str | int,
        render: RenderOptions,
        metrics: Sequence[str] = (),
        metric_samples: int | None = None,
        under_attack: UnderAttack | None = None,
        html: bool = False,
    ) -> None:
        self.methods = list(methods)
        self.kinds = [*SUFFIXES, *(ATTACK_SUFFIXES if under_attack else ())]
        suffixes = {**SUFFIXES, **ATTACK_SUFFIXES}
        infix = (lambda m: "") if len(self.methods) == 1 else (lambda m: f".{m}")
        self.report_names = (REPORT_JSON, REPORT_HTML) if html else (REPORT_JSON,)
        super().__init__(
            inputs,
            output,
            suffixes=[infix(m) + suffixes[kind] for m in self.methods for kind in self.kinds],
        )
        self.options = options
        self.target = target
        self.render = render
        self.metrics = list(metrics)
        self.metric_samples = metric_samples
        self.under_attack = under_attack
        self.attribution_options: dict[str, dict[str, Any]] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "options": self.options,
            "target": self.target,
            "render": dataclasses.asdict(self.render),
            "metrics": self.metrics,
            "metric_samples": self.metric_samples,
            "under_attack": self.under_attack and self.under_attack.settings(),
        }

    def _name(self, index: int | None) -> str | None:
        return None if self.names is None or index is None else self.names[index]

    def _outputs(self, relative: str) -> dict[str, dict[str, str]]:
        """method -> kind -> output file (relative to the output folder) of one image."""
        names = iter(self.plan[relative])
        return {method: {kind: next(names) for kind in self.kinds} for method in self.methods}

    def _render(self, method: str) -> dict[str, Any]:
        """Drawing options of a method: the non-negative CAM maps always sequentially."""
        render = self.render
        if method in NONNEGATIVE_METHODS and render.view == "diverging":
            render = dataclasses.replace(render, view="sequential", reduction=None)
        return dataclasses.asdict(render)

    def _explain(
        self, method: str, batch: ImageBatch, x: np.ndarray, x_adv: np.ndarray | None
    ) -> tuple[Attribution, list[dict[str, Any]]]:
        """One method on one batch: writes its files; (attribution, per-image entries)."""
        bounds = self.classifier.bounds
        options = self.options[method]
        keyed = with_first_index(method, options, self.first_index)
        target = batch.labels if self.target == "label" else self.target
        result = attribute(self.classifier, x, method, target, **keyed)
        self.attribution_options[method] = {
            key: value for key, value in result.options.items() if key != "first_index"
        }
        render = self._render(method)
        entries = []
        for i, image in enumerate(batch.entries):
            names = self._outputs(image.relative)[method]
            save_picture(heatmap(result, index=i, **render), self.out / names["heatmap"])
            save_picture(
                overlay(x[i], result, index=i, bounds=bounds, **render), self.out / names["overlay"]
            )
            with atomic_write(self.out / names["map"], "wb") as stream:
                np.save(stream, result.maps[i])
            entries.append(
                {
                    **names,
                    "score": float(result.score[i]),
                    "baseline_score": _item(result.baseline_score, i),
                    "delta": _item(result.delta, i),
                }
            )
        if self.metrics:
            columns = metric_table(
                self.classifier,
                x,
                result,
                method,
                self.metrics,
                method_options=keyed,
                samples=self.metric_samples,
                first_index=self.first_index,
            )
            for i, entry in enumerate(entries):
                entry["metrics"] = {name: float(values[i]) for name, values in columns.items()}
        if x_adv is not None:
            self._compare(method, batch, x, x_adv, result, entries, render)
        return result, entries

    def _compare(
        self,
        method: str,
        batch: ImageBatch,
        x: np.ndarray,
        x_adv: np.ndarray,
        clean: Attribution,
        entries: list[dict[str, Any]],
        render: dict[str, Any],
    ) -> None:
        """The adversarial's maps, panels and agreement with the clean maps, into ``entries``."""
        attack = self.under_attack
        shift = explanation_shift(
            self.classifier,
            x,
            batch.labels,
            method,
            x_adv,
            top_k=attack.top_k,
            adversarial_target=attack.adversarial_target,
            first_index=self.first_index,
            clean=clean,
            **self.options[method],
        )
        panel_render = {key: render[key] for key in ("view", "reduction", "percentile", "scale")}
        for i, entry in enumerate(entries):
            with atomic_write(self.out / entry["adversarial_map"], "wb") as stream:
                np.save(stream, shift.adversarial.maps[i])
            panel = shift_panel(
                x[i],
                x_adv[i],
                clean.maps[i],
                shift.adversarial.maps[i],
                bounds=self.classifier.bounds,
                **panel_render,
            )
            save_picture(panel, self.out / entry["shift"])
            entry["adversarial_target"] = int(shift.adversarial.target[i])
            entry["spearman"] = float(shift.spearman[i])
            entry["top_k_overlap"] = float(shift.top_k_overlap[i])

    def process_batch(self, batch: ImageBatch) -> list[Row]:
        """Maps of every method for one batch, written per image; returns report rows.

        Random draws (SmoothGrad noise, RISE masks, metric subsets, the attack's start) are
        keyed by each image's index in the folder, so they do not depend on the batch size.
        """
        x = batch.pixels(self.classifier.bounds)
        attacked = None
        if self.under_attack is not None:
            attacked = self.under_attack.attack(
                self.classifier, x, batch.labels, first_index=self.first_index
            )
        x_adv = None if attacked is None else attacked.x_adv
        explained = {method: self._explain(method, batch, x, x_adv) for method in self.methods}
        first, _ = explained[self.methods[0]]  # every method explains the same classes
        rows = []
        for i, entry in enumerate(batch.entries):
            label = None if batch.labels is None else int(batch.labels[i])
            target, predicted = int(first.target[i]), int(first.predicted[i])
            row: Row = {
                "path": entry.relative,
                "status": self.status,
                "reason": "",
                "label": label,
                "label_name": self._name(label),
                "target": target,
                "target_name": self._name(target),
                "predicted": predicted,
                "predicted_name": self._name(predicted),
            }
            if attacked is not None:
                adversarial = int(attacked.adv_pred[i])
                row["adversarial_predicted"] = adversarial
                row["adversarial_predicted_name"] = self._name(adversarial)
                row["attack_success"] = bool(attacked.success[i])
                row["adversarial_linf"] = float(attacked.linf[i])
            row["methods"] = {method: entries[i] for method, (_, entries) in explained.items()}
            if len(self.methods) == 1:  # one method: its entries also at the top, as before
                row.update(row["methods"][self.methods[0]])
            rows.append(row)
        return rows

    def summarize(self, rows: list[Row]) -> dict[str, Any]:
        explained = [row for row in rows if row["status"] == self.status]
        summary: dict[str, Any] = {
            "images_found": len(rows),
            "images_explained": len(explained),
            "images_skipped": len(rows) - len(explained),
            "methods": {},
            "metric_names": self.metrics,
            "target": self.target,
            "render": dataclasses.asdict(self.render),
        }
        for method in self.methods:
            summary["methods"][method] = method_figures(
                [row["methods"][method] for row in explained],
                self.attribution_options.get(method, self.options[method]),
                metrics=bool(self.metrics),
                under_attack=self.under_attack is not None,
            )
        if self.under_attack is not None:
            summary["under_attack"] = {
                **self.under_attack.settings(),
                "attack_success_rate": finite_mean([float(r["attack_success"]) for r in explained]),
            }
        if len(self.methods) == 1:  # one method: its figures also at the top, as before
            summary["method"] = self.methods[0]
            summary.update(summary["methods"][self.methods[0]])
        return summary

    def write_reports(self, report: FolderReport) -> None:
        super().write_reports(report)
        if REPORT_HTML in self.report_names:
            with atomic_write(self.out / REPORT_HTML, "w") as stream:
                stream.write(saliency_page(report))


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
    method: str | Sequence[str] = "integrated_gradients",
    *,
    target: str | int = "predicted",
    render: RenderOptions | None = None,
    metrics: str | Sequence[str] | None = None,
    metric_samples: int | None = None,
    under_attack: UnderAttack | None = None,
    html: bool = False,
    model_options: ModelOptions | None = None,
    image_options: ImageOptions | None = None,
    progress: Progress | None = None,
    **method_options: Any,
) -> FolderReport:
    """Explain the model's decision on every image under ``images``: under ``out``, at the same
    relative path, NAME.heatmap.png, NAME.overlay.png and NAME.npy (the raw map, float32
    [H, W, C]; CAM and perturbation methods [H, W, 1]), plus report.json. With several methods
    each file is named per method: NAME.<method>.heatmap.png, ...

    Args:
        model, images, out, model_options, image_options, progress: as for
            :func:`~robustkit.runs.attack_folder`.
        method: a name of :data:`robustkit.saliency.METHODS` or an alias ("ig", "gradcam",
            ...), several (a list or a comma-separated string) or "all" (every method that
            can explain the model: guided backpropagation needs ReLU-family layers (ReLU,
            ReLU6, LeakyReLU) and no other nonlinear activation, the CAM methods a convolution;
            the others are left out with a logged warning).
        target: the class explained: "predicted", "label" (the true label) or a class index
            or name.
        render: how heatmaps and overlays are drawn (CAM maps, non-negative, always
            sequentially when several methods run).
        metrics: saliency metrics per image and method ("all", a comma-separated string or a
            list of :data:`robustkit.saliency.metric_table.METRICS`); their means per method
            go to the summary.
        metric_samples: subsets (MuFidelity) and perturbed copies (stability) per image.
        under_attack: also explain each image's adversarial: NAME.adversarial.npy (its map)
            and NAME.shift.png (image, adversarial, both maps, where importance moved), and
            their Spearman correlation and top-k overlap per image.
        html: also write report.html (gallery per method, metrics and under-attack tables).
        method_options: the methods' keyword options (``steps``, ``samples``, ``seed``, ...);
            each goes to the methods that take it, and one no chosen method takes is refused.
            Random draws are keyed by each image's index in the folder, not by the batch.

    Returns:
        The report: per-image rows (target, prediction; per method in ``row["methods"]`` the
        files, score, for IG the completeness delta ``sum(map) - (f(x) - f(baseline))``, the
        metric values and the agreement under attack) and the summary (per method in
        ``summary["methods"]``). With one method its entries are also at the top level.
    """
    methods = resolve_methods(method)
    options = route_options(methods, method_options)
    metric_names = resolve_metrics(metrics)
    render = render or RenderOptions()
    if render.view == "diverging" and set(methods) <= set(NONNEGATIVE_METHODS):
        raise InputError(
            "Grad-CAM maps are non-negative (as are Grad-CAM++, LayerCAM and ScoreCAM maps); "
            "draw them with view 'sequential' (CLI: --view sequential)."
        )
    output = OutputOptions.of(out)
    image_options = image_options or ImageOptions()
    with locked_output(output.out, images):
        classifier = load_model(model, model_options)
        if method == "all":
            methods = applicable_methods(classifier, methods, options)
        inputs = RunInputs.open(model, classifier, images, image_options)
        run = ExplainRun(
            inputs,
            output,
            methods=methods,
            options=options,
            target=_resolve_target(target, inputs),
            render=render,
            metrics=metric_names,
            metric_samples=metric_samples,
            under_attack=under_attack,
            html=html,
        )
        return run.execute(progress)
