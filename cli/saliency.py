"""``robustkit saliency MODEL IMAGES``: a heatmap, an overlay and the raw map per image and
method, and a report with the options, (for IG) the completeness deltas, the saliency metrics
and the explanations under attack on request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustkit.errors import InputError
from robustkit.runs import (
    FolderReport,
    ImageOptions,
    ModelOptions,
    OutputOptions,
    RenderOptions,
    UnderAttack,
    explain_folder,
)
from robustkit.runs.explain_options import resolve_methods
from robustkit.runs.folder import REPORT_JSON
from robustkit.runs.html import REPORT_HTML
from robustkit.saliency import (
    AGGREGATIONS,
    BASELINE_KINDS,
    METHOD_ALIASES,
    METHODS,
    OBJECTIVES,
    REDUCTIONS,
    RULES,
    VIEWS,
)
from robustkit.saliency.metric_table import METRICS, resolve_metrics
from robustkit.saliency.under_attack import ADVERSARIAL_TARGETS
from robustkit_cli.attack import build_attack
from robustkit_cli.common import (
    NUMBER,
    Console,
    FolderProgressBar,
    command_template,
    image_options,
    model_options,
    output_options,
)

# command-line option -> the methods' keyword (each goes to the methods that take it)
METHOD_FLAGS = (
    "steps",
    "rule",
    "baseline",
    "samples",
    "noise",
    "aggregation",
    "layer",
    "patch_size",
    "stride",
    "grid_size",
    "keep_probability",
    "seed",
)
METHOD_NAMES = ", ".join([*METHODS, *METHOD_ALIASES])


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        resolve_methods(value)  # unknown names are usage errors, found before the model loads
        return value
    except InputError as error:
        raise click.BadParameter(str(error)) from None


def _metrics(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str]:
    try:
        return resolve_metrics(value)
    except InputError as error:
        raise click.BadParameter(str(error)) from None


def under_attack_options(
    attack: str | None,
    norm: str,
    eps: float | None,
    steps: int | None,
    seed: int,
    top_k: float,
    adversarial_target: str,
) -> UnderAttack | None:
    """The explanations-under-attack settings, or None without --under-attack; the attack
    ends on the 8-bit grid (as ``robustkit attack``'s), so the adversarial is a real image."""
    if attack is None:
        if eps is not None or steps is not None:
            raise click.UsageError("--eps and --attack-steps apply with --under-attack only.")
        return None
    if eps is None:
        raise click.UsageError("--under-attack needs --eps (e.g. --eps 8/255).")
    if attack == "fgsm" and steps is not None:
        raise click.UsageError("--attack-steps applies to --under-attack pgd only.")
    adversary = build_attack(attack, norm, eps, steps, None, None, None, "ce", seed)
    return UnderAttack(adversary, top_k=top_k, adversarial_target=adversarial_target)


@click.command("saliency")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("images", type=click.Path(path_type=str))
@click.option(
    "--method",
    "methods",
    default="ig",
    show_default=True,
    callback=_methods,
    help=f"Method, comma-separated methods or 'all': {METHOD_NAMES}.",
)
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
    help="Baseline image of IG, ScoreCAM, occlusion, RISE, KernelSHAP, LIME [default: black].",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    help="Noisy copies (SmoothGrad, SquareGrad, VarGrad) [50], masks (RISE) [2000] or "
    "coalitions (KernelSHAP, LIME) [1000] per image.",
)
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
@click.option("--layer", help="CAM layer name [default: the last convolution].")
@click.option(
    "--patch-size",
    type=click.IntRange(min=1),
    help="Square patch in pixels of occlusion, KernelSHAP, LIME [default: an 8x8 grid].",
)
@click.option("--stride", type=click.IntRange(min=1), help="Occlusion stride [default: patch].")
@click.option("--grid-size", type=click.IntRange(min=1), help="RISE mask grid [default: 7].")
@click.option("--keep-probability", type=NUMBER, help="RISE share of cells kept [default: 0.5].")
@click.option("--seed", type=int, help="Seed of the methods' random draws [default: 0].")
@click.option(
    "--internal-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Gradient evaluations per pass (memory bound).",
)
@click.option(
    "--metrics",
    callback=_metrics,
    help=f"Saliency metrics per image and method: 'all' or comma-separated ({', '.join(METRICS)}).",
)
@click.option(
    "--metric-samples",
    type=click.IntRange(min=1),
    help="Subsets (MuFidelity) and perturbed copies (stability) per image [128 and 10].",
)
@click.option(
    "--under-attack",
    "attack_name",
    type=click.Choice(["fgsm", "pgd"]),
    help="Also explain each image's adversarial and compare the maps (needs --eps).",
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--eps", type=NUMBER, help="Attack radius in [0, 1] pixel units, e.g. 8/255.")
@click.option("--attack-steps", type=click.IntRange(min=1), help="PGD steps [default: 40].")
@click.option(
    "--attack-seed", type=int, default=0, show_default=True, help="Seed of the attack's draws."
)
@click.option(
    "--top-k",
    type=NUMBER,
    default=0.1,
    show_default=True,
    help="Share of the pixels (by |map|) in the top-k sets compared under attack.",
)
@click.option(
    "--adversarial-target",
    type=click.Choice(ADVERSARIAL_TARGETS),
    default="same",
    show_default=True,
    help="The adversarial map explains the clean map's class or its own prediction.",
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
@click.option("--html", is_flag=True, help=f"Also write {REPORT_HTML} (gallery and tables).")
@model_options
@image_options
@output_options("saliency")
@command_template
def saliency(
    model: str,
    images: str,
    methods: str,
    target: str,
    objective: str,
    internal_batch_size: int,
    metrics: list[str],
    metric_samples: int | None,
    attack_name: str | None,
    norm: str,
    eps: float | None,
    attack_steps: int | None,
    attack_seed: int,
    top_k: float,
    adversarial_target: str,
    view: str,
    reduction: str | None,
    percentile: float,
    zoom: int,
    html: bool,
    model_options: ModelOptions,
    image_options: ImageOptions,
    output: OutputOptions,
    console: Console,
    **given: Any,
) -> int:
    """Explain the Keras model MODEL's decision on every image under IMAGES (a folder, searched
    recursively, or one file). For each image, writes under --out at the same relative path
    NAME.heatmap.png, NAME.overlay.png and NAME.npy (the raw map, float32 [H, W, C]; CAM and
    perturbation methods [H, W, 1]), plus report.json with the options, per-image targets and,
    for IG, the completeness deltas sum(map) - (f(x) - f(baseline)). With several methods
    (--method all, or a comma list) the files are NAME.<method>.heatmap.png and so on.

    --metrics adds the saliency metrics per image and method (their means in the summary).
    --under-attack pgd --eps 8/255 also explains each image's adversarial: NAME.adversarial.npy,
    NAME.shift.png (image, adversarial, both maps, where importance moved) and the maps'
    Spearman correlation and top-k overlap. Method options go to the methods that take them.
    Rerunning an interrupted run finishes it.

    Exit codes: 0 done, 1 failure during the run, 2 usage or input error.
    """
    method_options = {key: given[key] for key in METHOD_FLAGS if given[key] is not None}
    attack = under_attack_options(
        attack_name, norm, eps, attack_steps, attack_seed, top_k, adversarial_target
    )
    with FolderProgressBar(console, "explaining") as progress:
        report = explain_folder(
            model,
            images,
            output,
            methods,
            target=target,
            render=RenderOptions(view, reduction, percentile, scale=zoom),
            metrics=metrics,
            metric_samples=metric_samples,
            under_attack=attack,
            html=html,
            model_options=model_options,
            image_options=image_options,
            progress=progress,
            objective=objective,
            internal_batch_size=internal_batch_size,
            **method_options,
        )
    if console.json_output:
        console.print_json(report.to_dict())
    else:
        print_summary(console, report, output.out, html)
    return 0


def print_summary(console: Console, report: FolderReport, out: Path, html: bool) -> None:
    """The short human summary on stdout: per method its options and figures."""
    summary = report.summary
    console.say(
        f"images      {summary['images_explained']} explained, {summary['images_skipped']} "
        f"skipped; target {summary['target']}"
    )
    for method, figures in summary["methods"].items():
        options = ", ".join(f"{key} {value}" for key, value in figures["options"].items())
        console.say(f"{method} ({options})")
        completeness = figures.get("ig_completeness")
        if completeness:
            console.say(
                f"  delta     mean |delta| {completeness['mean_abs_delta']:.3g}, max "
                f"{completeness['max_abs_delta']:.3g} "
                f"({100 * completeness['max_relative_delta']:.2g}% of f(x) - f(baseline) at most)"
            )
        for name, mean in figures.get("metrics", {}).items():
            console.say(f"  {name:<17} {'n/a' if mean is None else f'{mean:.4g}'}")
        shift = figures.get("shift")
        if shift:
            values = [
                "n/a" if shift[key] is None else f"{shift[key]:.3f}"
                for key in ("spearman", "top_k_overlap")
            ]
            console.say(f"  under attack  Spearman {values[0]}, top-k overlap {values[1]}")
    attack = summary.get("under_attack")
    if attack:
        config = attack["attack"]
        rate = attack["attack_success_rate"]
        console.say(
            f"attack      {config['attack']} {config['norm']} eps={config['eps']:.4g}, success "
            + ("n/a" if rate is None else f"{100 * rate:.1f}%")
        )
    console.say_run(report, "explained", "speed       ")
    reports = f"{REPORT_JSON} and {REPORT_HTML}" if html else REPORT_JSON
    console.say(f"wrote heatmaps, overlays, .npy maps and {reports} to {out}")
