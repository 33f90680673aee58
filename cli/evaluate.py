"""``robustkit evaluate MODEL DATA``: robust accuracy under an attack suite, with sanity checks,
written as report.json, report.md and robustness_curve.png."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from robustkit.evaluation import CHECKS, ProgressEvent, RobustnessReport
from robustkit.runs import (
    SUITE_NAMES,
    ImageOptions,
    ModelOptions,
    OutputOptions,
    evaluate_folder,
)
from robustkit.runs.evaluate import ADVERSARIAL_NPZ, REPORT_FILES
from robustkit.runs.html import REPORT_HTML
from robustkit_cli.common import (
    NUMBERS,
    Console,
    command_template,
    image_options,
    model_options,
    output_options,
)


def parse_checks(value: str) -> str | list[str | int] | None:
    """ "all", "none" or comma-separated check numbers / names."""
    if value == "all":
        return "all"
    if value == "none":
        return None
    parts = [part.strip() for part in value.split(",") if part.strip()]
    return [int(part) if part.isdigit() else part for part in parts]


class ProgressBars:
    """One progress bar per attack pass, eps and check, drawn by the console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stack = contextlib.ExitStack()
        self.key: tuple[Any, ...] | None = None
        self.advance: Callable[[int], None] = lambda n: None
        self.done = 0

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.stage, event.name, event.eps, event.target, event.total)
        if key != self.key or event.done < self.done:
            self.close()
            label = f"{event.name:<14}" + ("" if event.eps is None else f" eps {event.eps:<6g}")
            if event.targets > 1:
                label += f" target {event.target}/{event.targets}"
            self.advance = self.stack.enter_context(self.console.progress(event.total, label))
            self.key, self.done = key, 0
        self.advance(event.done - self.done)
        self.done = event.done

    def close(self) -> None:
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.key = None


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_summary(console: Console, report: RobustnessReport, out: Path, html: bool) -> None:
    """The accuracy table, the checks that did not pass, cost and where the files went."""
    console.say(
        f"{report.norm} robust accuracy, {report.suite} suite ({report.mode}), "
        f"{report.num_examples} examples, seed {report.seed}"
    )
    width = max(len("worst case"), *(len(name) + 6 for name in report.attack_names))
    header = "".join(f"{f'eps {eps:g}':>11}" for eps in report.epsilons)
    console.say(f"{'':<{width}}{header}")
    clean = _percent(report.clean_accuracy)
    console.say(f"{'clean':<{width}}" + f"{clean:>11}" * len(report.epsilons))
    prefix = "after " if report.mode == "cascade" else ""
    for name, row in zip(report.attack_names, report.attack_accuracy(), strict=True):
        console.say(f"{prefix + name:<{width}}" + "".join(f"{_percent(v):>11}" for v in row))
    worst = "".join(f"{_percent(v):>11}" for v in report.robust_accuracy)
    console.say(f"{'worst case':<{width}}{worst}")
    by_checks = report.verification.get("broken_by_checks", 0)
    if by_checks:
        console.say(
            f"  (includes {by_checks} example-eps pair(s) only a sanity check's attack broke; "
            "the suite alone: "
            + ", ".join(_percent(v) for v in report.robust_accuracy_before_checks)
            + ")"
        )
    verdicts = ", ".join(f"{check.number} {check.verdict}" for check in report.checks)
    console.say(f"checks: {verdicts}")
    for check in report.checks:
        if check.verdict in ("warn", "fail"):
            console.say(f"  {check.number} {check.name} {check.verdict}: {check.explanation}")
    console.say(
        f"cost: {_percent(report.cost['share_of_full_budget'])} of the full budget; "
        f"{report.timing['total']:.1f} s"
    )
    console.say(f"wrote {', '.join([*REPORT_FILES, *[REPORT_HTML] * html])} to {out}")


@click.command("evaluate")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("data", type=click.Path(path_type=str))
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option(
    "--eps",
    type=NUMBERS,
    required=True,
    help="Comma-separated radii in [0, 1] pixel units, e.g. 0.1,0.2,0.3 or 2/255,8/255.",
)
@click.option("--suite", type=click.Choice(SUITE_NAMES), default="standard", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option(
    "--checks",
    "checks_option",
    default="all",
    show_default=True,
    help=f"Sanity checks to run: all, none, or numbers/names ({', '.join(CHECKS)}).",
)
@click.option(
    "--check-samples",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Examples the extra-compute checks attack.",
)
@click.option(
    "--independent",
    is_flag=True,
    help="Run every attack on every example (each attack's own accuracy; full cost).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N examples.")
@click.option("--per-example", is_flag=True, help="Include per-example records in report.json.")
@click.option(
    "--save-adversarial",
    is_flag=True,
    help=f"Also write the kept adversarial images and labels to {ADVERSARIAL_NPZ}.",
)
@click.option(
    "--html",
    is_flag=True,
    help=f"Also write {REPORT_HTML}: tables, curve, checks and the weakest examples.",
)
@model_options
@image_options
@output_options("evaluation")
@command_template
def evaluate(
    model: str,
    data: str,
    norm: str,
    eps: tuple[float, ...],
    suite: str,
    seed: int,
    checks_option: str,
    check_samples: int,
    independent: bool,
    limit: int | None,
    per_example: bool,
    save_adversarial: bool,
    html: bool,
    model_options: ModelOptions,
    image_options: ImageOptions,
    output: OutputOptions,
    console: Console,
) -> int:
    """Measure the robust accuracy of the Keras model MODEL (.keras or .h5) on DATA: an image
    folder with labels (class subfolders or --labels, read as `robustkit attack` reads them) or
    an .npz holding x (images, uint8 or floats in [0, 1]) and y (labels).

    The suite runs as a cascade per eps (each attack sees only examples still robust); the
    worst case per example, nine sanity checks with verdicts, every budget and the cost go to
    report.json, report.md and robustness_curve.png under --out (and report.html with --html).

    Exit codes: 0 done, 1 failure during the run, 2 usage or input error.
    """
    bars = ProgressBars(console)
    try:
        report = evaluate_folder(
            model,
            data,
            output,
            norm,
            list(eps),
            limit=limit,
            save_adversarial=save_adversarial,
            html=html,
            model_options=model_options,
            image_options=image_options,
            suite=suite,
            seed=seed,
            cascade=not independent,
            checks=parse_checks(checks_option),
            check_samples=check_samples,
            per_example=per_example,
            progress=bars,
        )
    finally:
        bars.close()
    if console.json_output:
        console.print_json(report.to_dict())
    else:
        print_summary(console, report, output.out, html)
    return 0
