"""Evaluate a model on a labelled image folder or an .npz: robust accuracy under an attack suite,
written as report.json, report.md and robustness_curve.png (and the adversarial images, and
report.html on request)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from robustkit import evaluation
from robustkit.errors import InputError
from robustkit.evaluation import RobustnessReport, write_report
from robustkit.evaluation.render import REPORT_FILES
from robustkit.evaluation.sources import image_array
from robustkit.evaluation.suites import SUITES
from robustkit.io import atomic_write, from_uint8
from robustkit.models import Classifier
from robustkit.norms import Norm
from robustkit.runs.examples import FolderExamples
from robustkit.runs.html import REPORT_HTML, evaluation_page
from robustkit.runs.options import (
    ImageOptions,
    ModelOptions,
    ModelSource,
    OutputOptions,
    load_model,
    open_images,
)
from robustkit.runs.outputs import locked_output, refuse_overwrite

logger = logging.getLogger(__name__)

ADVERSARIAL_NPZ = "adversarial.npz"
CHECKPOINT = ".robustkit-evaluate-checkpoint"  # in the output folder until the reports are done
SUITE_NAMES = tuple(SUITES)


def read_npz(path: str | os.PathLike[str], classifier: Classifier) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels from an .npz with arrays ``x`` ([N, H, W(, C)], uint8 codes or floats
    in the classifier's bounds) and ``y`` (int labels [N])."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive or "y" not in archive:
                raise InputError(
                    f"{path} must hold arrays 'x' (images) and 'y' (labels); it has "
                    f"{sorted(archive.files)}."
                )
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read {path} as an .npz archive: {error}.") from error
    if x.ndim == 3 and classifier.input_shape[-1] == 1:
        x = x[..., None]
    if x.dtype == np.uint8:
        x = from_uint8(x, classifier.bounds)
    return x, y


def open_examples(
    data: str | os.PathLike[str],
    classifier: Classifier,
    options: ImageOptions,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray] | FolderExamples:
    """The first ``limit`` examples of ``data``: (x, y) in memory from an .npz file (see
    :func:`read_npz`), or a labelled image folder or file read chunk by chunk."""
    if Path(data).suffix.lower() == ".npz" and Path(data).is_file():
        x, y = read_npz(data, classifier)
        return x[:limit], y[:limit]
    folder = open_images(data, classifier, options)
    return FolderExamples(folder, classifier.bounds, options.batch_size, limit)


def read_labelled_images(
    data: str | os.PathLike[str], classifier: Classifier, options: ImageOptions
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) in memory from an .npz file or every readable labelled image of a folder or file
    (float32 [N, H, W, C] in the classifier's bounds, labels [N]); unreadable files are
    skipped with a logged warning."""
    examples = open_examples(data, classifier, options)
    if isinstance(examples, tuple):
        return examples
    return examples.images(np.arange(len(examples))), examples.labels


def evaluate_folder(
    model: ModelSource,
    data: str | os.PathLike[str],
    out: str | os.PathLike[str] | OutputOptions,
    threat: str | Norm = "linf",
    epsilons: list[float] | None = None,
    *,
    limit: int | None = None,
    save_adversarial: bool = False,
    html: bool = False,
    model_options: ModelOptions | None = None,
    image_options: ImageOptions | None = None,
    **evaluate_options: Any,
) -> RobustnessReport:
    """Measure robust accuracy on ``data`` (a labelled image folder or an .npz of ``x``, ``y``)
    with :func:`robustkit.evaluation.evaluate` and write its reports into ``out``.

    Args:
        model, out, model_options: as for :func:`~robustkit.runs.attack_folder`.
        threat, epsilons, evaluate_options: as for :func:`robustkit.evaluation.evaluate`
            (``suite``, ``seed``, ``cascade``, ``checks``, ``progress``, ...); the batch size is
            ``image_options.batch_size``.
        limit: evaluate only the first ``limit`` examples.
        save_adversarial: also write the kept adversarial images [E, N, H, W, C], the labels
            and the radii to ``adversarial.npz``.
        html: also write report.html (tables, curve, checks and the weakest examples; it
            keeps the per-example records and adversarial images in memory, as
            ``save_adversarial`` does, without adding them to report.json).
    """
    output = OutputOptions.of(out)
    image_options = image_options or ImageOptions()
    per_example = bool(evaluate_options.pop("per_example", False))
    checkpoint = output.out / CHECKPOINT
    with locked_output(output.out, data):
        if output.overwrite:
            shutil.rmtree(checkpoint, ignore_errors=True)
        elif checkpoint.is_dir():
            logger.info("resuming the interrupted evaluation in %s", output.out)
        else:
            extra = [ADVERSARIAL_NPZ] * save_adversarial + [REPORT_HTML] * html
            refuse_overwrite([output.out / name for name in [*REPORT_FILES, *extra]], output.out)
        classifier = load_model(model, model_options)
        examples = open_examples(data, classifier, image_options, limit)
        report = evaluation.evaluate(
            classifier,
            examples,
            threat,
            epsilons,
            batch_size=image_options.batch_size,
            per_example=per_example or html,
            return_images=save_adversarial or html,
            checkpoint_dir=checkpoint,
            **evaluate_options,
        )
        y = examples[1] if isinstance(examples, tuple) else examples.labels
        if html:
            x = examples[0] if isinstance(examples, tuple) else image_array(examples)
            page = evaluation_page(report, x)
            report = dataclasses.replace(
                report,
                examples=report.examples if per_example else None,
                adversarial_images=report.adversarial_images if save_adversarial else None,
            )
        write_report(report, output.out, overwrite=True)
        if save_adversarial:
            with atomic_write(output.out / ADVERSARIAL_NPZ, "wb") as stream:
                np.savez_compressed(
                    stream, x_adv=report.adversarial_images, y=y, epsilons=report.epsilons
                )
        if html:
            with atomic_write(output.out / REPORT_HTML, "w") as stream:
                stream.write(page)
        shutil.rmtree(checkpoint)
    return report
