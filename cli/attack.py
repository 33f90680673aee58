"""``robustkit attack MODEL IMAGES``: adversarial PNGs (exact 8-bit) and a report for a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from robustkit.attacks import FGSM, PGD
from robustkit.io.pixels import LEVELS
from robustkit.runs import FolderReport, ImageOptions, ModelOptions, OutputOptions, attack_folder
from robustkit.runs.attack import REPORT_CSV, REPORT_JSON
from robustkit_cli.common import (
    NUMBER,
    Console,
    FolderProgressBar,
    command_template,
    image_options,
    model_options,
    output_options,
)


def build_attack(
    attack: str,
    norm: str,
    eps: float,
    steps: int | None,
    step_size: float | None,
    restarts: int | None,
    random_start: bool | None,
    loss: str,
    seed: int,
) -> PGD:
    """The configured attack, quantization-aware on the 8-bit grid (``quantize=255``)."""
    options: dict[str, Any] = {"step_size": step_size, "loss": loss, "seed": seed}
    if random_start is not None:
        options["random_start"] = random_start
    if attack == "fgsm":
        if steps is not None or restarts is not None:
            raise click.UsageError("--steps and --restarts apply to --attack pgd only.")
        return FGSM(norm, eps, quantize=LEVELS, **options)
    return PGD(norm, eps, steps=steps or 40, restarts=restarts or 1, quantize=LEVELS, **options)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_summary(console: Console, report: FolderReport, out: Path) -> None:
    """The short human summary on stdout."""
    summary = report.summary
    config = summary["attack"]
    steps = (
        f", {config['steps']} steps, step {config['step_size']:.4g}"
        if config["attack"] == "PGD"
        else ""
    )
    console.say(
        f"{config['attack']} {config['norm']} eps={config['eps']:.4g}{steps}, "
        f"loss {config['loss']}, seed {config['seed']}"
        + (f", target {summary['target']}" if summary["target"] is not None else "")
    )
    console.say(
        f"images      {summary['images_attacked']} attacked, {summary['images_skipped']} skipped; "
        f"labels from {summary['label_source']}"
    )
    if summary["clean_accuracy"] is not None:
        console.say(f"clean accuracy   {_percent(summary['clean_accuracy'])}")
        console.say(f"robust accuracy  {_percent(summary['robust_accuracy'])}")
    console.say(
        f"attack success   {_percent(summary['attack_success_rate'])} on the saved 8-bit PNGs "
        f"({_percent(summary['attack_success_rate_before_quantization'])} before rounding)"
    )
    if summary["images_attacked"]:
        console.say(
            f"distance         Linf mean {summary['mean_linf']:.4f} max {summary['max_linf']:.4f}; "
            f"L2 mean {summary['mean_l2']:.4f} max {summary['max_l2']:.4f}"
        )
    console.say_run(report, "attacked", "speed            ")
    console.say(f"wrote adversarial PNGs, {REPORT_JSON} and {REPORT_CSV} to {out}")


@click.command("attack")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("images", type=click.Path(path_type=str))
@click.option(
    "--attack", "attack_name", type=click.Choice(["fgsm", "pgd"]), default="pgd", show_default=True
)
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--eps", type=NUMBER, required=True, help="Radius in [0, 1] pixel units, e.g. 8/255 or 0.3."
)
@click.option("--steps", type=click.IntRange(min=1), help="PGD steps per restart [default: 40].")
@click.option(
    "--step-size", type=NUMBER, help="Step in pixel units [default: 2.5 * eps / steps; FGSM: eps]."
)
@click.option("--restarts", type=click.IntRange(min=1), help="PGD random restarts [default: 1].")
@click.option(
    "--random-start/--no-random-start",
    default=None,
    help="Start at a random point of the ball [default: PGD yes, FGSM no].",
)
@click.option("--loss", type=click.Choice(["ce", "margin"]), default="ce", show_default=True)
@click.option("--targeted", is_flag=True, help="Targeted attack; give --target-class or --target.")
@click.option("--target-class", help="Target class for every image: an index or a class name.")
@click.option(
    "--target",
    "target_mode",
    type=click.Choice(["least-likely", "random"]),
    help="Per-image target.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option(
    "--save-perturbation",
    is_flag=True,
    help="Also write an amplified perturbation PNG beside each image.",
)
@model_options
@image_options
@output_options("adversarial")
@command_template
def attack(
    model: str,
    images: str,
    attack_name: str,
    norm: str,
    eps: float,
    steps: int | None,
    step_size: float | None,
    restarts: int | None,
    random_start: bool | None,
    loss: str,
    targeted: bool,
    target_class: str | None,
    target_mode: str | None,
    seed: int,
    save_perturbation: bool,
    model_options: ModelOptions,
    image_options: ImageOptions,
    output: OutputOptions,
    console: Console,
) -> int:
    """Attack every image under IMAGES (a folder, searched recursively, or one file) with the
    Keras model MODEL (.keras or .h5) and write one adversarial PNG per image under --out, at
    the same relative path, plus report.json and report.csv.

    Labels come from --labels, else class subfolders (or --class-names), else the model's own
    predictions. The PNGs are exactly what was evaluated: the attack finishes on the 8-bit grid
    and success is re-checked on the saved files. Rerunning an interrupted run finishes it.

    Exit codes: 0 done, 1 failure during the run, 2 usage or input error.
    """
    if target_class is not None and target_mode is not None:
        raise click.UsageError("Give --target-class or --target, not both.")
    if targeted and target_class is None and target_mode is None:
        raise click.UsageError(
            "--targeted needs --target-class CLASS or --target least-likely|random."
        )
    adversary = build_attack(
        attack_name, norm, eps, steps, step_size, restarts, random_start, loss, seed
    )
    with FolderProgressBar(console, "attacking") as progress:
        report = attack_folder(
            model,
            images,
            output,
            adversary,
            target=target_mode if target_class is None else target_class,
            save_perturbation=save_perturbation,
            model_options=model_options,
            image_options=image_options,
            progress=progress,
        )
    if console.json_output:
        console.print_json(report.to_dict())
    else:
        print_summary(console, report, output.out)
    return 0
