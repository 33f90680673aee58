"""``robustkit saliency MODEL IMAGES``: a heatmap, an overlay and the raw map per image, and a
report with the options and (for IG) the completeness deltas."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import numpy as np

from robustkit.errors import InputError
from robustkit.io import ImageBatch, ImageFolder, atomic_write, write_json
from robustkit.saliency import (
    AGGREGATIONS,
    BASELINE_KINDS,
    METHOD_ALIASES,
    OBJECTIVES,
    REDUCTIONS,
    RULES,
    VIEWS,
    Attribution,
    attribute,
    heatmap,
    overlay,
    save,
)
from robustkit_cli.common import (
    NUMBER,
    Console,
    FolderRun,
    check_output_folder,
    environment_versions,
    handle_errors,
    image_options,
    load_model,
    model_options,
    open_images,
    output_options,
    parse_class,
    refuse_overwriting_inputs,
    resume_or_start,
    skip_row,
)

REPORT_JSON = "report.json"
JOURNAL = ".robustkit-saliency-journal.jsonl"
SUFFIXES = (".heatmap.png", ".overlay.png", ".npy")
CLI_METHODS = ("ig", "smoothgrad", "gradient", "gradxinput", "gradcam")
# option -> (the methods it applies to, the library's keyword)
METHOD_OPTIONS = {
    "--steps": (("ig",), "steps"),
    "--rule": (("ig",), "rule"),
    "--baseline": (("ig",), "baseline"),
    "--samples": (("smoothgrad",), "samples"),
    "--noise": (("smoothgrad",), "noise"),
    "--aggregation": (("smoothgrad",), "aggregation"),
    "--layer": (("gradcam",), "layer"),
    "--seed": (("ig", "smoothgrad"), "seed"),
}
SEEDED_METHODS = ("integrated_gradients", "smoothgrad")  # draw noise keyed by image index


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """Library keyword options from the command-line options given (None = not given); an
    option that does not apply to ``method`` is a usage error."""
    options = {}
    for flag, value in given.items():
        if value is None:
            continue
        methods, keyword = METHOD_OPTIONS[flag]
        if method not in methods:
            raise click.UsageError(f"{flag} applies to --method {'/'.join(methods)} only.")
        options[keyword] = value
    return options


class SaliencyRun(FolderRun):
    """Saliency maps for an image folder: heatmap and overlay PNGs and the raw map per image."""

    journal_name = JOURNAL
    report_names = (REPORT_JSON,)
    progress_label = "explaining"

    def __init__(
        self,
        classifier: Any,
        folder: ImageFolder,
        out: Path,
        *,
        method: str,
        options: dict[str, Any],
        target: str | int,
        render: dict[str, Any],
        batch_size: int,
        console: Console,
    ) -> None:
        super().__init__(folder, out, suffixes=SUFFIXES, batch_size=batch_size, console=console)
        self.classifier = classifier
        self.method = method
        self.options = options
        self.target = target
        self.render = render
        self.attribution_options: dict[str, Any] = {}

    def _name(self, index: int | None) -> str | None:
        return None if self.names is None or index is None else self.names[index]

    def process_batch(self, batch: ImageBatch) -> list[dict[str, Any]]:
        """Maps for one batch; writes heatmap, overlay and .npy per image; returns report rows.

        Random draws (SmoothGrad noise, a uniform IG baseline) are keyed by each image's index
        in the folder, so they do not depend on --batch-size.
        """
        x = batch.pixels()
        options = dict(self.options)
        if self.method in SEEDED_METHODS:
            options["first_image"] = self.batch_index * self.batch_size
        result: Attribution = attribute(
            self.classifier,
            x,
            self.method,
            batch.labels if self.target == "label" else self.target,
            **options,
        )
        self.attribution_options = {
            key: value for key, value in result.options.items() if key != "first_image"
        }
        labels = batch.labels
        rows = []
        for i, entry in enumerate(batch.entries):
            heatmap_name, overlay_name, npy_name = self.plan[entry.relative]
            save(heatmap(result, index=i, **self.render), self.out / heatmap_name)
            save(overlay(x[i], result, index=i, **self.render), self.out / overlay_name)
            with atomic_write(self.out / npy_name, "wb") as stream:
                np.save(stream, result.maps[i])
            label = None if labels is None else int(labels[i])
            target = int(result.target[i])
            predicted = int(result.predicted[i])
            rows.append(
                {
                    "path": entry.relative,
                    "status": "explained",
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


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, and for IG the completeness deltas, over the report rows."""
    explained = [row for row in rows if row["status"] == "explained"]
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


def parse_target(value: str, folder: ImageFolder, num_classes: int) -> str | int:
    """--target: "predicted", "label" (needs labels) or a class index or name."""
    if value in ("predicted", "label"):
        if value == "label" and folder.label_source == "none":
            raise InputError(
                "--target label needs labels: give --labels, class subfolders or "
                "--class-names; or use --target predicted."
            )
        return value
    return parse_class(value, folder, num_classes, "--target")


@click.command("saliency")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("images", type=click.Path(path_type=str))
@click.option("--method", type=click.Choice(CLI_METHODS), default="ig", show_default=True)
@click.option(
    "--target",
    default="predicted",
    show_default=True,
    help="Class explained: 'predicted', 'label' (the true label) or a class index or name.",
)
@click.option(
    "--objective",
    type=click.Choice(list(OBJECTIVES)),
    default="logit",
    show_default=True,
    help="The target's score that is explained.",
)
@click.option("--steps", type=click.IntRange(min=1), help="IG steps [default: 50].")
@click.option(
    "--rule",
    type=click.Choice(RULES),
    help="IG integration rule [default: gauss_legendre].",
)
@click.option(
    "--baseline",
    type=click.Choice(BASELINE_KINDS),
    help="IG baseline image [default: black].",
)
@click.option("--samples", type=click.IntRange(min=1), help="SmoothGrad samples [default: 50].")
@click.option(
    "--noise",
    type=NUMBER,
    help="SmoothGrad noise std as a fraction of the pixel range [default: 0.15].",
)
@click.option(
    "--aggregation",
    type=click.Choice(AGGREGATIONS),
    help="SmoothGrad aggregation [default: mean].",
)
@click.option("--layer", help="Grad-CAM layer name [default: the last convolution].")
@click.option("--seed", type=int, help="Seed of SmoothGrad noise / the uniform baseline [0].")
@click.option(
    "--internal-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Gradient evaluations per pass (memory bound).",
)
@click.option(
    "--view",
    type=click.Choice(VIEWS),
    default="sequential",
    show_default=True,
    help="Magnitudes (fire colormap) or signed values (blue-black-red).",
)
@click.option(
    "--reduction",
    type=click.Choice(REDUCTIONS),
    help="Channel reduction [default: abs-sum for sequential, sum for diverging].",
)
@click.option(
    "--percentile",
    type=click.FloatRange(min=0, max=100, min_open=True),
    default=99.0,
    show_default=True,
    help="Values above this percentile are shown at full strength.",
)
@click.option(
    "--zoom", type=click.IntRange(min=1), default=1, show_default=True, help="Enlarge PNGs."
)
@model_options
@image_options
@output_options("saliency")
@handle_errors
def saliency(
    model: str,
    images: str,
    method: str,
    target: str,
    objective: str,
    steps: int | None,
    rule: str | None,
    baseline: str | None,
    samples: int | None,
    noise: float | None,
    aggregation: str | None,
    layer: str | None,
    seed: int | None,
    internal_batch_size: int,
    view: str,
    reduction: str | None,
    percentile: float,
    zoom: int,
    unsafe_load: bool,
    input_scale: float,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    labels: Path | None,
    class_names: Path | None,
    folder_labels: bool,
    resize: str | None,
    strict: bool,
    batch_size: int,
    out: Path,
    overwrite: bool,
    quiet: bool,
    json_output: bool,
    debug: bool,
) -> int:
    """Explain the Keras model MODEL's decision on every image under IMAGES (a folder, searched
    recursively, or one file). For each image, writes under --out at the same relative path
    NAME.heatmap.png, NAME.overlay.png and NAME.npy (the raw map, float32 [H, W, C]; Grad-CAM
    [H, W, 1]), plus report.json with the options, per-image targets and, for IG, the
    completeness deltas sum(map) - (f(x) - f(baseline)).

    Methods: ig (Integrated Gradients), smoothgrad, gradient, gradxinput (gradient x input),
    gradcam. Rerunning an interrupted run finishes it.

    Exit codes: 0 done, 1 failure during the run, 2 usage or input error.
    """
    options = method_options(
        method,
        {
            "--steps": steps,
            "--rule": rule,
            "--baseline": baseline,
            "--samples": samples,
            "--noise": noise,
            "--aggregation": aggregation,
            "--layer": layer,
            "--seed": seed,
        },
    )
    options.update(objective=objective, internal_batch_size=internal_batch_size)
    if method == "gradcam" and view == "diverging":
        raise click.UsageError("Grad-CAM maps are non-negative; use --view sequential.")
    console = Console(quiet=quiet, json_output=json_output)
    check_output_folder(out, images)
    classifier = load_model(
        model, unsafe_load=unsafe_load, input_scale=input_scale, mean=mean, std=std, console=console
    )
    folder = open_images(
        images,
        classifier,
        labels=labels,
        class_names=class_names,
        folder_labels=folder_labels,
        resize=resize,
        strict=strict,
    )
    chosen_target = parse_target(target, folder, classifier.num_classes)
    render = {"view": view, "reduction": reduction, "percentile": percentile, "scale": zoom}
    library_method = METHOD_ALIASES.get(method, method)
    run = SaliencyRun(
        classifier,
        folder,
        out,
        method=library_method,
        options=options,
        target=chosen_target,
        render=render,
        batch_size=batch_size,
        console=console,
    )
    refuse_overwriting_inputs(run.output_files(), [entry.path for entry in folder.entries])
    settings = {
        "model": str(Path(model).resolve()),
        "model_bytes": Path(model).stat().st_size,
        "images": str(Path(images).resolve()),
        "method": library_method,
        "options": options,
        "target": chosen_target,
        "render": render,
        "labels": None if labels is None else str(labels.resolve()),
        "class_names": None if class_names is None else str(class_names.resolve()),
        "folder_labels": folder_labels,
        "resize": resize,
        "preprocessing": classifier.preprocessing.to_dict(),
        "batch_size": batch_size,
    }
    done = resume_or_start(run, settings, overwrite, console)
    for skip in folder.skipped:
        if skip.relative not in done:
            console.warn(f"skipped {skip.relative}: {skip.reason}")
    pre_skipped = [skip_row(s.relative, s.reason) for s in folder.skipped if s.relative not in done]
    new_rows, explained, seconds = run.run(done)
    rows = sorted([*done.values(), *pre_skipped, *new_rows], key=lambda row: row["path"])
    summary = summarize(rows)
    summary.update(
        {
            "method": library_method,
            "options": run.attribution_options or options,
            "target": chosen_target,
            "render": render,
            "images_explained_this_run": explained,
            "resumed": bool(done),
            "seconds": seconds,
            "images_per_second": explained / seconds if seconds > 0 else math.nan,
            "model": model,
            "images": images,
            "class_names": run.names,
            "preprocessing": classifier.preprocessing.to_dict(),
            "resize": resize,
            "versions": environment_versions(),
        }
    )
    report = {"summary": summary, "images": rows}
    write_json(out / REPORT_JSON, report)
    run.journal.remove()
    if json_output:
        console.print_json(report)
    else:
        print_summary(console, summary, out)
    return 0


def print_summary(console: Console, summary: dict[str, Any], out: Path) -> None:
    """The short human summary on stdout."""
    options = ", ".join(f"{key} {value}" for key, value in summary["options"].items())
    console.say(f"{summary['method']} ({options}), target {summary['target']}")
    console.say(
        f"images      {summary['images_explained']} explained, {summary['images_skipped']} skipped"
    )
    completeness = summary.get("ig_completeness")
    if completeness:
        console.say(
            f"IG delta    mean |delta| {completeness['mean_abs_delta']:.3g}, max "
            f"{completeness['max_abs_delta']:.3g} "
            f"({100 * completeness['max_relative_delta']:.2g}% of f(x) - f(baseline) at most)"
        )
    console.say(f"speed       {summary['images_per_second']:.1f} images/s")
    console.say(f"wrote heatmaps, overlays, .npy maps and {REPORT_JSON} to {out}")
