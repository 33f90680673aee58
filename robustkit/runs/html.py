"""report.html: a self-contained page beside a run's report.json (no network, no scripts).

The page builder lives with the runs because it shows what a run wrote into its output
folder: the saliency gallery links the heatmaps, overlays and panels by relative paths, and the
evaluation page links robustness_curve.png and inlines the few images of its weakest examples
as PNG data URIs. ``io`` stays the room that only reads and writes files, and the saliency and
evaluation packages need know nothing about pages. Every string a user gave (file names, class
names, model paths) is escaped with :func:`html.escape`; paths in ``src`` are URL-quoted too.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from robustkit.evaluation import RobustnessReport
from robustkit.io import to_uint8
from robustkit.runs.folder import FolderReport

REPORT_HTML = "report.html"
WEAKEST_EXAMPLES = 12  # tiles in the evaluation page's gallery of weakest examples
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img.tile { width: 112px; image-rendering: pixelated; display: inline-block; margin: 2px; }
img.panel { height: 112px; image-rendering: pixelated; display: block; }
img.curve { max-width: 100%; }
figure { display: inline-block; margin: 0.3em; }
figcaption { font-size: 0.8em; max-width: 240px; }
.verdict-pass { color: #161; } .verdict-warn { color: #a60; font-weight: bold; }
.verdict-fail { color: #b00; font-weight: bold; } .meta { color: #555; }
"""

# ----------------------------------------------------------------------------- building blocks


def text(value: Any) -> str:
    """Any value as escaped HTML text (None as an en dash)."""
    return "\u2013" if value is None else html.escape(str(value), quote=True)


def number(value: float | None, digits: int = 4) -> str:
    """A number cell's text: ``digits`` significant digits, n/a for None or NaN."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def image_tag(src: str, alt: str, css_class: str) -> str:
    """<img> of a relative path (URL-quoted) or a data URI; ``alt`` is escaped."""
    source = src if src.startswith("data:") else quote(src)
    return f'<img class="{css_class}" src="{text(source)}" alt="{text(alt)}">'


def png_data_uri(codes: np.ndarray) -> str:
    """uint8 [H, W, 1 or 3] as a ``data:image/png;base64,...`` URI."""
    stream = io.BytesIO()
    Image.fromarray(codes[..., 0] if codes.shape[-1] == 1 else codes).save(stream, format="PNG")
    return "data:image/png;base64," + base64.b64encode(stream.getvalue()).decode("ascii")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
    """A table of HTML cells (already escaped); cells starting with '<td' are kept whole."""
    cell = lambda c: c if c.startswith("<td") else f"<td>{c}</td>"  # noqa: E731
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>\n" for row in rows)
    attribute = f' class="{css_class}"' if css_class else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table>\n"


def number_cell(value: str) -> str:
    return f'<td class="number">{value}</td>'


def document(title: str, sections: Sequence[str]) -> str:
    """The whole page: inline style, no scripts, no external resources."""
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{text(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _labelled(index: int | None, name: str | None) -> str:
    return text(index if name is None else f"{index} ({name})")


# ----------------------------------------------------------------------------- saliency


def _metrics_section(summary: dict[str, Any], methods: list[str]) -> str:
    """Means per method: metric columns, IG completeness, agreement under attack."""
    columns: list[str] = list(
        dict.fromkeys(c for m in methods for c in summary["methods"][m].get("metrics", {}))
    )
    attacked = "under_attack" in summary
    header = ["method", *map(text, columns)]
    header += ["IG mean |delta|"] * any("ig_completeness" in summary["methods"][m] for m in methods)
    header += ["Spearman under attack", "top-k overlap under attack"] * attacked
    rows = []
    for method in methods:
        figures = summary["methods"][method]
        row = [text(method), *(number_cell(number(figures["metrics"].get(c))) for c in columns)]
        if "IG mean |delta|" in header:
            completeness = figures.get("ig_completeness")
            row.append(number_cell(number(completeness and completeness["mean_abs_delta"])))
        if attacked:
            shift = figures["shift"]
            row += [number_cell(number(shift[key])) for key in ("spearman", "top_k_overlap")]
        rows.append(row)
    if len(header) == 1:
        return ""
    return "<h2>Metrics (mean over images)</h2>\n" + table(header, rows, "metrics")


def _gallery_section(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """One row per image: its name, label and prediction, then one overlay per method."""
    body = []
    for row in rows:
        name = text(row["path"])
        cells = [
            f"{name}<br>label {_labelled(row['label'], row['label_name'])}<br>"
            f"predicted {_labelled(row['predicted'], row['predicted_name'])}"
        ]
        for method in methods:
            entry = row["methods"][method]
            cells.append(image_tag(entry["overlay"], f"{method} overlay of {row['path']}", "tile"))
        body.append(cells)
    return "<h2>Gallery</h2>\n" + table(["image", *map(text, methods)], body, "gallery")


def _per_image_section(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """Per method, the metric values (and agreement under attack) of every image."""
    sections = []
    for method in methods:
        entries = [row["methods"][method] for row in rows]
        columns = list(entries[0].get("metrics", {})) if entries else []
        shift = [key for key in ("spearman", "top_k_overlap") if entries and key in entries[0]]
        if not columns and not shift:
            continue
        body = [
            [
                text(row["path"]),
                *(number_cell(number(entry["metrics"][c])) for c in columns),
                *(number_cell(number(entry[key])) for key in shift),
            ]
            for row, entry in zip(rows, entries, strict=True)
        ]
        header = ["image", *map(text, columns), *shift]
        sections.append(f"<h3>{text(method)}</h3>\n" + table(header, body, "per-image"))
    return "<h2>Per-image values</h2>\n" + "".join(sections) if sections else ""


def _attack_section(summary: dict[str, Any], rows: list[dict[str, Any]], methods: list[str]) -> str:
    """The attack, its success rate and one panel per image and method."""
    settings = summary["under_attack"]
    config = ", ".join(f"{key}={value}" for key, value in settings["attack"].items())
    figures = []
    for row in rows:
        for method in methods:
            entry = row["methods"][method]
            caption = (
                f"{text(row['path'])}, {text(method)}: predicted "
                f"{_labelled(row['predicted'], row['predicted_name'])} \u2192 "
                f"{_labelled(row['adversarial_predicted'], row['adversarial_predicted_name'])}; "
                f"Spearman {number(entry['spearman'], 3)}, top-k overlap "
                f"{number(entry['top_k_overlap'], 3)}"
            )
            alt = f"{method} under attack: {row['path']}"
            figures.append(
                f"<figure>{image_tag(entry['shift'], alt, 'panel')}"
                f"<figcaption>{caption}</figcaption></figure>"
            )
    return (
        "<h2>Explanations under attack</h2>\n"
        f'<p class="meta">{text(config)}; top-k = {text(settings["top_k"])} of the pixels; '
        f"the adversarial map explains the {text(settings['adversarial_target'])} class; attack "
        f"success {percent(settings['attack_success_rate'])}. Panels: image, adversarial, "
        "clean map, adversarial map, where importance moved (red: gained, blue: lost).</p>\n"
        + "\n".join(figures)
    )


def saliency_page(report: FolderReport) -> str:
    """report.html of a saliency folder run: metrics table, gallery per method, per-image
    values, the explanations under attack, and the skipped files."""
    summary = report.summary
    methods = list(summary["methods"])
    explained = [row for row in report.rows if row["status"] == "explained"]
    skipped = [row for row in report.rows if row["status"] != "explained"]
    sections = [
        f'<p class="meta">model {text(summary["model"])}; images {text(summary["images"])}; '
        f"{summary['images_explained']} explained, {summary['images_skipped']} skipped; "
        f"target {text(summary['target'])}; methods {text(', '.join(methods))}</p>",
        _metrics_section(summary, methods),
        _gallery_section(explained, methods),
        _per_image_section(explained, methods),
    ]
    if "under_attack" in summary:
        sections.append(_attack_section(summary, explained, methods))
    if skipped:
        body = [[text(row["path"]), text(row["reason"])] for row in skipped]
        sections.append("<h2>Skipped files</h2>\n" + table(["file", "reason"], body, "skipped"))
    return document("Saliency report", sections)


# ----------------------------------------------------------------------------- evaluation


def weakest_examples(
    report: RobustnessReport, count: int = WEAKEST_EXAMPLES
) -> list[tuple[int, int]]:
    """(example, eps index) of up to ``count`` clean-correct examples, weakest first: broken at
    the smallest eps first, then by the largest margin (best other logit minus the true one)
    at that eps (the never-broken at the largest eps); the eps index is where it is shown."""
    records = report.examples
    if records is None:
        return []
    num_eps = len(report.epsilons)
    correct = np.flatnonzero(records.clean_pred == records.labels)
    not_robust = ~records.robust[:, correct]
    first = np.where(not_robust.any(axis=0), not_robust.argmax(axis=0), num_eps)
    shown = np.minimum(first, num_eps - 1)
    margins = records.adversarial_margin[shown, correct]
    order = np.lexsort((-margins, first))[:count]
    return [(int(correct[i]), int(shown[i])) for i in order]


def _weakest_section(report: RobustnessReport, x: np.ndarray | None) -> str:
    """Tiles of the weakest examples: clean image, kept adversarial, caption."""
    picked = weakest_examples(report)
    if x is None or report.adversarial_images is None or not picked:
        return ""
    records, figures = report.examples, []
    for example, eps_index in picked:
        clean = to_uint8(x[example], report.bounds)
        adversarial = to_uint8(report.adversarial_images[eps_index, example], report.bounds)
        robust = bool(records.robust[eps_index, example])
        predicted = records.adversarial_pred[eps_index, example]
        caption = (
            f"#{example}: label {records.labels[example]}, at eps "
            f"{report.epsilons[eps_index]:g} predicted {predicted}"
            f" ({'still robust' if robust else 'broken'}), margin "
            f"{number(float(records.adversarial_margin[eps_index, example]), 3)}"
        )
        figures.append(
            f"<figure>{image_tag(png_data_uri(clean), f'example {example}', 'tile')}"
            f"{image_tag(png_data_uri(adversarial), f'adversarial of example {example}', 'tile')}"
            f"<figcaption>{text(caption)}</figcaption></figure>"
        )
    return (
        '<h2>Weakest examples</h2>\n<p class="meta">Clean-correct examples broken at the '
        "smallest eps first, then those closest to the decision boundary (margin: best other "
        "logit minus the true one at the kept adversarial).</p>\n" + "\n".join(figures)
    )


def _verdict_cell(verdict: str) -> str:
    return f'<td class="verdict-{text(verdict.replace(" ", "-"))}">{text(verdict)}</td>'


def evaluation_page(
    report: RobustnessReport, x: np.ndarray | None = None, curve: str = "robustness_curve.png"
) -> str:
    """report.html of an evaluation: accuracy table and curve (``curve``, a relative path),
    cost per attack and eps, the checks with verdicts, and (with per-example records,
    adversarial images and the clean images ``x``) the weakest examples."""
    eps_header = [f"eps {eps:g}" for eps in report.epsilons]
    prefix = "after " if report.mode == "cascade" else ""
    accuracy = [["clean", *(number_cell(percent(report.clean_accuracy)) for _ in eps_header)]]
    for name, row in zip(report.attack_names, report.attack_accuracy(), strict=True):
        accuracy.append([text(prefix + name), *(number_cell(percent(v)) for v in row)])
    worst = [number_cell(f"<b>{percent(v)}</b>") for v in report.robust_accuracy]
    accuracy.append(["<b>worst case</b>", *worst])
    outcomes = [
        [
            text(o.attack),
            number_cell(f"{o.eps:g}"),
            *(number_cell(str(v)) for v in (o.attacked, o.broken)),
            *(number_cell(str(v)) for v in (o.gradient_evaluations, o.forward_evaluations)),
            number_cell(f"{o.wall_time_s:.2f}"),
        ]
        for o in report.outcomes
    ]
    checks = [
        [
            str(check.number),
            text(check.name),
            _verdict_cell(check.verdict),
            text(check.subsample),
            text(check.explanation),
        ]
        for check in report.checks
    ]
    sections = [
        f'<p class="meta">{text(report.norm)} ball, eps '
        f"{text(', '.join(f'{e:g}' for e in report.epsilons))}; suite {text(report.suite)} "
        f"({text(report.mode)}), seed {report.seed}; {report.num_examples} examples, "
        f"{report.num_classes} classes; logits: {text(report.logits_source)}</p>",
        "<h2>Robust accuracy</h2>\n" + table(["", *eps_header], accuracy, "accuracy"),
        image_tag(curve, "robust accuracy against eps", "curve"),
        "<h2>Per attack and eps</h2>\n"
        + table(
            ["attack", "eps", "attacked", "broken", "gradient evals", "forward evals", "s"],
            outcomes,
            "outcomes",
        ),
        "<h2>Sanity checks</h2>\n"
        + table(["#", "check", "verdict", "subsample", "explanation"], checks, "checks"),
        _weakest_section(report, x),
    ]
    return document("Robustness report", sections)
