"""report.html of the saliency and evaluation runs: the page's structure parsed with Python's
html.parser (gallery size, table rows, escaped hostile file names, only local images, no
scripts), the weakest-examples order, and the page rendered by headless Chromium without
console errors and with the gallery's colours on screen."""

import base64
import dataclasses
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from cli_helpers import save, tiny_cnn, write_images
from click.testing import CliRunner
from PIL import Image

from robustkit.attacks import PGD
from robustkit.evaluation import ExampleRecords
from robustkit.models import Classifier
from robustkit.runs import UnderAttack, evaluate_folder, explain_folder
from robustkit.runs.html import weakest_examples
from robustkit_cli.main import main

HOSTILE = ["<i>/x.png", "ant/<script>.png", 'bee/a&b "c".png']  # class folders <i>, ant, bee
METHODS = ["gradient", "integrated_gradients"]
CHROMIUM = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None
)


class Page(HTMLParser):
    """What a page holds: its images (with the class of the table they sit in), the rows of
    each table by class, element counts and the text."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.rows: dict[str, int] = {}
        self.tables: list[str] = []
        self.tags: dict[str, int] = {}
        self.text: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "table":
            self.tables.append(attributes.get("class", ""))
            self.rows.setdefault(self.tables[-1], 0)
        elif tag == "tr" and self.tables:
            self.rows[self.tables[-1]] += 1
        elif tag == "img":
            self.images.append({**attributes, "table": self.tables[-1] if self.tables else ""})

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.tables.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def saliency_report(tmp_path_factory):
    """A saliency run with two methods, two metrics and PGD on hostile file names."""
    root = tmp_path_factory.mktemp("html")
    write_images(root / "in", HOSTILE)
    out = root / "out"
    report = explain_folder(
        Classifier(tiny_cnn(1, seed=3)),
        root / "in",
        out,
        METHODS,
        metrics="sparseness,complexity",
        under_attack=UnderAttack(PGD("linf", 0.1, steps=2), top_k=0.25),
        html=True,
        steps=4,
    )
    return report, out


def test_saliency_page_structure_and_escaping(saliency_report):
    report, out = saliency_report
    source = (out / "report.html").read_text(encoding="utf-8")
    page = Page(source)
    images, methods = len(HOSTILE), len(METHODS)
    gallery = [image for image in page.images if image["table"] == "gallery"]
    assert len(gallery) == images * methods
    assert all(image["class"] == "tile" for image in gallery)
    assert page.rows["gallery"] == 1 + images  # header and one row per image
    assert page.rows["metrics"] == 1 + methods
    assert page.rows["per-image"] == methods * (1 + images)  # one table per method
    panels = [image for image in page.images if image["class"] == "panel"]
    assert len(panels) == images * methods
    for image in page.images:  # every picture is a file the run wrote, by a relative path
        assert not image["src"].startswith(("http", "/", "data:"))
        assert (out / unquote(image["src"])).is_file()
    rows = {row["path"]: row for row in report.rows}
    sources = {unquote(image["src"]) for image in gallery}
    assert sources == {rows[p]["methods"][m]["overlay"] for p in HOSTILE for m in METHODS}
    assert page.tags.get("script", 0) == 0 and "<script>" not in source  # escaped
    assert "ant/&lt;script&gt;.png" in source and "a&amp;b &quot;c&quot;.png" in source
    text = "".join(page.text)
    assert "ant/<script>.png" in text and 'bee/a&b "c".png' in text
    assert {image["alt"] for image in gallery} == {
        f"{m} overlay of {p}" for p in HOSTILE for m in METHODS
    }


@pytest.fixture(scope="module")
def evaluation_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    relatives = [f"{name}/{i}.png" for name in ("ant", "bee", "cat") for i in range(3)]
    write_images(root / "in", relatives)
    out = root / "out"
    report = evaluate_folder(
        Classifier(tiny_cnn(1, seed=4)),
        root / "in",
        out,
        "linf",
        [0.02, 0.3],
        html=True,
        suite="quick",
        checks=[1, 2],
        seed=1,
    )
    return report, out


def test_evaluation_page_structure(evaluation_report):
    report, out = evaluation_report
    assert sorted(p.name for p in out.iterdir()) == [
        "report.html", "report.json", "report.md", "robustness_curve.png"
    ]  # fmt: skip
    assert report.examples is None and report.adversarial_images is None  # as without html
    page = Page((out / "report.html").read_text(encoding="utf-8"))
    assert page.rows["accuracy"] == 1 + 1 + len(report.attacks) + 1  # header, clean, worst
    assert page.rows["outcomes"] == 1 + len(report.outcomes)
    assert page.rows["checks"] == 1 + len(report.checks)
    assert [image["src"] for image in page.images if image["class"] == "curve"] == [
        "robustness_curve.png"
    ]
    tiles = [image for image in page.images if image["class"] == "tile"]
    correct = round(report.clean_accuracy * report.num_examples)
    assert len(tiles) == 2 * min(12, correct)  # clean and adversarial per weakest example
    for image in tiles:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        with Image.open(io.BytesIO(base64.b64decode(image["src"][len(prefix) :]))) as png:
            assert png.size == (8, 8)
    assert page.tags.get("script", 0) == 0


def test_the_commands_write_report_html_with_html(tmp_path):
    write_images(tmp_path / "in", [f"{name}/0.png" for name in ("ant", "bee", "cat")])
    model = save(tiny_cnn(1), tmp_path / "tiny.keras")
    common = [model, str(tmp_path / "in"), "--html", "--out"]
    evaluated = CliRunner().invoke(
        main, ["evaluate", *common, str(tmp_path / "e"), "--eps", "0.1", "--suite", "quick",
               "--checks", "none"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "report.html" in evaluated.output
    assert Page((tmp_path / "e" / "report.html").read_text()).rows["accuracy"] == 5
    explained = CliRunner().invoke(main, ["saliency", *common, str(tmp_path / "s")])
    assert explained.exit_code == 0, explained.output
    assert "report.json and report.html" in explained.output
    assert Page((tmp_path / "s" / "report.html").read_text()).rows["gallery"] == 4


def test_weakest_examples_first_broken_then_closest_to_the_boundary(evaluation_report):
    report, _ = evaluation_report
    robust = np.array([[1, 1, 0, 1, 1, 1], [1, 0, 0, 1, 1, 0]], bool)
    margins = np.array([[-2.0, -1, 0.5, -3, -0.5, -1], [-1.5, 0.2, 0.9, -2.5, -0.1, 0.4]])
    records = ExampleRecords(
        labels=[0, 0, 0, 0, 0, 1],
        clean_pred=[0, 0, 0, 0, 0, 1],
        robust=robust,
        broken_by=np.where(robust, -1, 0),
        adversarial_pred=np.zeros((2, 6)),
        adversarial_margin=margins,
        linf=np.zeros((2, 6)),
        l2=np.zeros((2, 6)),
        evaluations=np.zeros((2, 6)),
        attacked=np.ones((1, 2, 6)),
        broken=~robust[None],
    )
    example = dataclasses.replace(report, examples=records, epsilons=[0.1, 0.3])
    # 2 broken at eps 0.1; 5 then 1 broken at 0.3 (margins 0.4, 0.2); never broken: 4, 0, 3
    assert weakest_examples(example) == [(2, 0), (5, 1), (1, 1), (4, 1), (0, 1), (3, 1)]
    records.clean_pred[2] = 1  # misclassified to begin with: not shown
    assert weakest_examples(example, count=2) == [(5, 1), (1, 1)]


def chromium(page: Path, screenshot: Path) -> str:
    """Render ``page`` headless into ``screenshot``; the browser's stderr (its console log)."""
    command = [
        CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        f"--screenshot={screenshot}", "--window-size=1200,1600", "--enable-logging=stderr",
        "--v=0", page.resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def console_errors(log: str) -> list[str]:
    """The console lines of a Chromium log (the pages have no scripts: any is an error)."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def coloured_pixels(screenshot: Path) -> int:
    """Pixels whose red exceeds blue by 60 or more: the fire colormap's heat, never the page's
    black, grey and white."""
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    return int(((pixels[..., 0] - pixels[..., 2]) >= 60).sum())


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed; on Debian or Ubuntu: apt-get install chromium",
)


@needs_chromium
def test_chromium_sees_console_errors(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><script>throw new Error("boom")</script></body></html>')
    assert console_errors(chromium(broken, tmp_path / "broken.png"))  # the check can fail


@needs_chromium
def test_saliency_page_renders_in_chromium(saliency_report, tmp_path):
    _, out = saliency_report
    screenshot = tmp_path / "saliency.png"
    assert console_errors(chromium(out / "report.html", screenshot)) == []
    assert screenshot.is_file()
    assert coloured_pixels(screenshot) > 1000  # the heatmap overlays are on screen


@needs_chromium
def test_evaluation_page_renders_in_chromium(evaluation_report, tmp_path):
    _, out = evaluation_report
    screenshot = tmp_path / "evaluation.png"
    assert console_errors(chromium(out / "report.html", screenshot)) == []
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    coloured = np.ptp(pixels, axis=-1) > 60  # the curve's coloured lines (not grey text)
    assert coloured.sum() > 500
