"""Reports on disk: ``report.json``, ``report.md`` and ``robustness_curve.png``.

The curve is drawn with Pillow's ImageDraw: accuracy (0-1) against eps, starting from the clean
accuracy at eps 0, one line per attack and a thick black worst-case line.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from robustkit.errors import OutputExistsError
from robustkit.evaluation.report import RobustnessReport
from robustkit.io import atomic_write, write_json

REPORT_FILES = ("report.json", "report.md", "robustness_curve.png")
VERDICT_MARKS = {"pass": "pass", "warn": "**warn**", "fail": "**FAIL**", "not run": "not run"}
COLORS = (  # one per attack line (the worst case is black)
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
WIDTH, HEIGHT = 900, 520
LEFT, RIGHT, TOP, BOTTOM = 70, 230, 50, 60  # plot margins in pixels


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row_label(report: RobustnessReport, name: str) -> str:
    return f"after {name}" if report.mode == "cascade" else name


def report_markdown(report: RobustnessReport) -> str:
    """The report as Markdown: summary, accuracy table, checks, budgets, cost."""
    eps_header = " | ".join(f"eps {eps:g}" for eps in report.epsilons)
    rule = "|".join(["---"] * (len(report.epsilons) + 1))
    accuracy = report.attack_accuracy()
    timing = report.timing
    lines = [
        "# Robustness report",
        "",
        f"- Threat: {report.norm} ball, eps {', '.join(f'{e:g}' for e in report.epsilons)} "
        f"(pixel bounds [{report.bounds[0]:g}, {report.bounds[1]:g}])",
        f"- Suite: {report.suite} ({report.mode}), seed {report.seed}",
        f"- Data: {report.num_examples} examples, {report.num_classes} classes; clean accuracy "
        f"{_percent(report.clean_accuracy)}",
        f"- Logits: {report.logits_source}",
        f"- Wall time: {timing['total']:.1f} s (clean {timing['clean']:.1f} s, attacks "
        f"{timing['attacks']:.1f} s, checks {timing['checks']:.1f} s)",
        "",
        "## Robust accuracy",
        "",
        f"| | {eps_header} |",
        f"|{rule}|",
        f"| clean | {' | '.join(_percent(report.clean_accuracy) for _ in report.epsilons)} |",
    ]
    for name, row in zip(report.attack_names, accuracy, strict=True):
        lines.append(f"| {_row_label(report, name)} | {' | '.join(map(_percent, row))} |")
    lines.append(
        f"| **worst case** | {' | '.join(f'**{_percent(v)}**' for v in report.robust_accuracy)} |"
    )
    lines += [
        "",
        "Cascade: each row is the accuracy left after that attack and those above it; every "
        "example keeps its strongest adversarial."
        if report.mode == "cascade"
        else "Independent: each row is that attack's own accuracy; the worst case is per "
        "example over all attacks.",
        "",
        "## Sanity checks",
        "",
        "| # | check | verdict | subsample | explanation |",
        "|---|---|---|---|---|",
    ]
    for check in report.checks:
        subsample = "-" if check.subsample is None else str(check.subsample)
        lines.append(
            f"| {check.number} | {check.name} | {VERDICT_MARKS[check.verdict]} | {subsample} "
            f"| {_cell(check.explanation)} |"
        )
    lines += [
        "",
        "## Attacks and budgets",
        "",
        "| attack | class | gradient-free | targets | evaluations per example | options |",
        "|---|---|---|---|---|---|",
    ]
    for attack in report.attacks:
        options = ", ".join(f"{key}={value}" for key, value in attack["options"].items())
        free = "yes" if attack["gradient_free"] else "no"
        lines.append(
            f"| {attack['name']} | {attack['attack']} | {free}"
            f" | {attack['top_k_targets'] or '-'} | {attack['full_budget_per_example']} "
            f"| {_cell(options)} |"
        )
    lines += [
        "",
        "## Cost",
        "",
        "| attack | eps | attacked | broken | gradient evals | forward evals | full budget | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in report.outcomes:
        budget = o.full_budget_gradient_evaluations + o.full_budget_forward_evaluations
        lines.append(
            f"| {o.attack} | {o.eps:g} | {o.attacked} | {o.broken} | {o.gradient_evaluations} "
            f"| {o.forward_evaluations} | {budget} | {o.wall_time_s:.2f} |"
        )
    cost, check = report.cost, report.verification
    lines += [
        "",
        f"Spent {_percent(cost['share_of_full_budget'])} of what running every attack at full "
        "budget on every correctly classified example would cost.",
        "",
        f"Verification: {check['rechecked']} adversarials re-classified by a fresh forward pass, "
        f"{check['disagreements']} disagreed (and did not count); {check['outside_ball']} "
        "rejected for leaving the ball or the bounds. The worst case also counts "
        f"{check.get('broken_by_checks', 0)} example-eps pair(s) only a sanity check's attack "
        "broke, and examples broken at a smaller eps as broken at every larger one.",
        "",
    ]
    return "\n".join(lines)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def robustness_curve(report: RobustnessReport) -> Image.Image:
    """An RGB image of accuracy against eps: one line per attack and the worst case."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(12)
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    top_eps = max(report.epsilons) or 1.0

    def point(eps: float, accuracy: float) -> tuple[float, float]:
        return x0 + (x1 - x0) * eps / top_eps, y0 - (y0 - y1) * accuracy

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        _, y = point(0, tick)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        draw.text((x0 - 8, y), f"{tick:.2f}", fill="black", font=small, anchor="rm")
    for eps in [0.0, *report.epsilons]:
        x, _ = point(eps, 0)
        draw.line([(x, y0), (x, y0 + 5)], fill="black")
        draw.text((x, y0 + 8), f"{eps:g}", fill="black", font=small, anchor="mt")
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=2)
    draw.text(((x0 + x1) / 2, HEIGHT - 22), f"eps ({report.norm})", fill="black", font=font,
              anchor="mm")  # fmt: skip
    draw.text((x0 - 55, y1 - 25), "accuracy", fill="black", font=font)
    title = f"Robust accuracy, {report.suite} suite ({report.mode}), {report.num_examples} examples"
    draw.text(((x0 + x1) / 2, 18), title, fill="black", font=font, anchor="mm")

    lines = [
        (_row_label(report, name), COLORS[a % len(COLORS)], 2, row)
        for a, (name, row) in enumerate(
            zip(report.attack_names, report.attack_accuracy(), strict=True)
        )
    ]
    lines.append(("worst case", (0, 0, 0), 4, report.robust_accuracy))
    tracks = []
    for _, color, width, row in lines:
        points = [point(0.0, report.clean_accuracy)]
        points += [point(eps, acc) for eps, acc in zip(report.epsilons, row, strict=True)]
        tracks.append((points, color, width))
    # the thick worst-case line goes under the attack lines (visible where they coincide); its
    # markers go on top of everything
    for points, color, width in [tracks[-1], *tracks[:-1]]:
        draw.line(points, fill=color, width=width, joint="curve")
    for points, color, width in tracks:
        for x, y in points:
            draw.ellipse([x - width - 1, y - width - 1, x + width + 1, y + width + 1], fill=color)
    for n, (label, color, width, _) in enumerate(lines):
        legend_y = y1 + 10 + 24 * n
        draw.line([(x1 + 20, legend_y), (x1 + 50, legend_y)], fill=color, width=width)
        draw.text((x1 + 58, legend_y), label, fill="black", font=small, anchor="lm")
    return image


def write_report(
    report: RobustnessReport, out: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """Write report.json, report.md and robustness_curve.png into folder ``out``.

    Raises OutputExistsError if any of them exists and ``overwrite`` is False. Each file is
    written atomically. Returns the paths written.
    """
    out = Path(out)
    paths = [out / name for name in REPORT_FILES]
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing[0]} already exists; pass overwrite=True (CLI: --overwrite) or choose "
            "another output folder."
        )
    write_json(paths[0], report.to_dict())
    with atomic_write(paths[1], "w") as stream:
        stream.write(report_markdown(report))
    with atomic_write(paths[2], "wb") as stream:
        robustness_curve(report).save(stream, format="PNG")
    return paths
