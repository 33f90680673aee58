"""``robustkit saliency MODEL IMAGES``: a heatmap, an overlay and the raw map per image, and a
report with the options and (for IG) the completeness deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustkit.runs import (
    ImageOptions,
    ModelOptions,
    OutputOptions,
    RenderOptions,
    explain_folder,
)
from robustkit.runs.folder import REPORT_JSON
from robustkit.saliency import (
    AGGREGATIONS,
    BASELINE_KINDS,
    OBJECTIVES,
    REDUCTIONS,
    RULES,
    VIEWS,
)
from robustkit_cli.common import (
    NUMBER,
    Console,
    FolderProgressBar,
    command_template,
    image_options,
    model_options,
    output_options,
)

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
@command_template
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
    model_options: ModelOptions,
    image_options: ImageOptions,
    output: OutputOptions,
    console: Console,
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
    with FolderProgressBar(console, "explaining") as progress:
        report = explain_folder(
            model,
            images,
            output,
            method,
            target=target,
            render=RenderOptions(view, reduction, percentile, scale=zoom),
            model_options=model_options,
            image_options=image_options,
            progress=progress,
            objective=objective,
            internal_batch_size=internal_batch_size,
            **options,
        )
    if console.json_output:
        console.print_json(report.to_dict())
    else:
        print_summary(console, report.summary, output.out)
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
