"""Attack a folder of images and save exact 8-bit PNGs: what is saved is what was evaluated.

The adversarial images are rounded to the 8-bit grid inside the eps-ball, written as lossless
PNGs, read back from disk and classified again; every reported prediction and success is that of
the saved file.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.attacks import Attack, AttackResult, is_robust
from robustkit.attacks.base import TARGET_MODES
from robustkit.io import (
    ImageBatch,
    from_uint8,
    perturbation_codes,
    read_image,
    to_uint8,
    write_csv,
    write_png,
)
from robustkit.io.pixels import LEVELS
from robustkit.norms import ball_slack
from robustkit.runs.folder import REPORT_JSON, FolderReport, FolderRun, Progress, Row, RunInputs
from robustkit.runs.options import (
    ImageOptions,
    ModelOptions,
    ModelSource,
    OutputOptions,
    load_model,
)
from robustkit.runs.outputs import locked_output

logger = logging.getLogger(__name__)

REPORT_CSV = "report.csv"
JOURNAL = ".robustkit-attack-journal.jsonl"
ROW_FIELDS = (
    "path",
    "status",
    "reason",
    "output",
    "label",
    "label_name",
    "target",
    "clean_pred",
    "clean_confidence",
    "adv_pred",
    "adv_confidence",
    "success",
    "success_before_quantization",
    "linf",
    "l2",
    "gradient_steps",
)


def saved_codes(
    attack: Attack, x: np.ndarray, x_adv: np.ndarray, bounds: tuple[float, float] = (0.0, 1.0)
) -> np.ndarray:
    """8-bit codes [N, H, W, C] of the adversarial images x_adv, inside the eps-ball after
    rounding (x, x_adv: float32 [N, H, W, C] in ``bounds``, x on the 8-bit grid).

    A quantized attack leaves ``x_adv`` on the grid, so rounding only removes float round-off;
    should rounding ever leave the ball, the perturbation is snapped back onto the grid inside
    it (the norm's own rule).
    """
    low, high = bounds
    codes = to_uint8(x_adv, bounds)
    delta = from_uint8(codes, bounds) - x
    slack = ball_slack(attack.norm.name, attack.norm.eps, bounds, int(np.prod(x.shape[1:])))
    if np.all(attack.norm.distance(delta).numpy() <= attack.norm.eps + slack):
        return codes
    snapped = attack.norm.snap_to_grid(delta, (high - low) / LEVELS).numpy()
    return to_uint8(np.clip(x + snapped, low, high), bounds)


def log_linf_grid(attack: Attack, bounds: tuple[float, float]) -> None:
    """Note when a Linf eps falls between grid steps: saved pixels move by whole steps only."""
    span = bounds[1] - bounds[0]
    grid_steps = attack.norm.eps * LEVELS / span
    kept = math.floor(grid_steps + 1e-6)  # the attack's own rule (Linf.snap_to_grid)
    if attack.norm.name == "linf" and grid_steps - kept > 1e-6:
        logger.info(
            "eps %g is %g steps of the 8-bit grid; saved pixels move by at most %d steps (%.4f).",
            attack.norm.eps,
            grid_steps,
            kept,
            kept * span / LEVELS,
        )


class AttackRun(FolderRun):
    """One attack over an image folder: exact 8-bit PNGs checked on disk, report rows."""

    journal_name = JOURNAL
    report_names = (REPORT_JSON, REPORT_CSV)
    status = "attacked"

    def __init__(
        self,
        inputs: RunInputs,
        output: OutputOptions,
        attack: Attack,
        *,
        target: int | str | None,
        save_perturbation: bool,
    ) -> None:
        suffixes = [".png", ".perturbation.png"] if save_perturbation else [".png"]
        super().__init__(inputs, output, suffixes=suffixes)
        self.attack = attack
        self.target = target
        self.save_perturbation = save_perturbation

    def settings(self) -> dict[str, Any]:
        return {
            "attack": self.attack.config,
            "target": self.target,
            "save_perturbation": self.save_perturbation,
        }

    def _target_for(self, n: int) -> Any:
        if isinstance(self.target, int):
            return np.full((n,), self.target, dtype=np.int64)
        return self.target

    def _write(self, relative: str, clean: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Write one adversarial PNG (and its perturbation picture); the codes read back."""
        outputs = self.plan[relative]
        write_png(self.out / outputs[0], image)
        if len(outputs) > 1:
            delta = from_uint8(image) - from_uint8(clean)
            write_png(self.out / outputs[1], perturbation_codes(delta))
        saved, _ = read_image(self.out / outputs[0], channels=image.shape[-1])
        if not np.array_equal(saved, image):
            raise OSError(f"{self.out / outputs[0]} did not read back as written.")
        return saved

    def process_batch(self, batch: ImageBatch) -> list[Row]:
        """Attack one batch, write its PNGs, re-read them and judge the saved pixels."""
        bounds = self.classifier.bounds
        x = batch.pixels(bounds)
        result: AttackResult = self.attack(
            self.classifier,
            x,
            batch.labels,
            target=self._target_for(len(x)),
            batch_size=len(x),
            first_index=self.first_index,
        )
        codes = saved_codes(self.attack, x, result.x_adv, bounds)
        reread = np.stack(
            [
                self._write(entry.relative, clean, image)
                for entry, clean, image in zip(batch.entries, batch.codes, codes, strict=True)
            ]
        )
        probabilities = tf.nn.softmax(
            self.classifier.predict_logits(from_uint8(reread, bounds))
        ).numpy()
        adv_pred = probabilities.argmax(axis=1)
        goal = result.labels if result.target is None else result.target
        success = adv_pred == goal if result.target is not None else adv_pred != goal
        steps = reread.astype(np.int16) - batch.codes.astype(np.int16)
        delta = steps.reshape(len(x), -1) * (bounds[1] - bounds[0]) / LEVELS  # pixel units
        before = (
            result.success if result.success_unquantized is None else result.success_unquantized
        )
        rows = []
        for i, entry in enumerate(batch.entries):
            label = None if result.labels_from_model else int(result.labels[i])
            rows.append(
                {
                    "path": entry.relative,
                    "status": self.status,
                    "reason": "",
                    "output": self.plan[entry.relative][0],
                    "label": label,
                    "label_name": None
                    if self.names is None or label is None
                    else self.names[label],
                    "target": None if result.target is None else int(result.target[i]),
                    "clean_pred": int(result.clean_pred[i]),
                    "clean_confidence": float(result.clean_confidence[i]),
                    "adv_pred": int(adv_pred[i]),
                    "adv_confidence": float(probabilities[i, adv_pred[i]]),
                    "success": bool(success[i]),
                    "success_before_quantization": bool(before[i]),
                    "linf": float(np.abs(delta[i]).max()),
                    "l2": float(np.sqrt(np.sum(delta[i] ** 2))),
                    "gradient_steps": int(result.steps[i]),
                }
            )
        return rows

    def summarize(self, rows: list[Row]) -> dict[str, Any]:
        return {
            **summarize(rows, self.folder.label_source),
            "attack": self.attack.config,
            "seed": self.attack.seed,
            "target": self.target,
        }

    def write_reports(self, report: FolderReport) -> None:
        super().write_reports(report)
        write_csv(self.out / REPORT_CSV, report.rows, ROW_FIELDS)


def summarize(rows: list[Row], label_source: str) -> dict[str, Any]:
    """Accuracy, success and distance figures over the rows of an attack report."""
    attacked = [row for row in rows if row["status"] == AttackRun.status]
    n = len(attacked)

    def share(flags: list[bool]) -> float | None:
        return float(np.mean(flags)) if flags else None

    def stat(key: str, reduce: Any) -> float | None:
        return float(reduce([row[key] for row in attacked])) if attacked else None

    has_labels = label_source != "none"
    success = [row["success"] for row in attacked]
    before = [row["success_before_quantization"] for row in attacked]
    correct = [row["clean_pred"] == row["label"] for row in attacked]
    broken = [row["adv_pred"] != row["label"] for row in attacked]
    return {
        "images_found": len(rows),
        "images_attacked": n,
        "images_skipped": len(rows) - n,
        "label_source": label_source if has_labels else "model predictions",
        "clean_accuracy": share(correct) if has_labels else None,
        "robust_accuracy": share(
            is_robust(np.array(correct, dtype=bool), np.array(broken, dtype=bool)).tolist()
        )
        if has_labels
        else None,
        "attack_success_rate": share(success),
        "attack_success_rate_before_quantization": share(before),
        "successes_lost_to_quantization": int(
            sum(b and not s for b, s in zip(before, success, strict=True))
        ),
        "mean_linf": stat("linf", np.mean),
        "max_linf": stat("linf", np.max),
        "mean_l2": stat("l2", np.mean),
        "max_l2": stat("l2", np.max),
        "gradient_steps": int(sum(row["gradient_steps"] for row in attacked)),
    }


def _resolve_target(target: int | str | None, inputs: RunInputs) -> int | str | None:
    if target is None or target in TARGET_MODES:
        return target
    return inputs.class_of(target, "target")


def attack_folder(
    model: ModelSource,
    images: str | os.PathLike[str],
    out: str | os.PathLike[str] | OutputOptions,
    attack: Attack,
    *,
    target: int | str | None = None,
    save_perturbation: bool = False,
    model_options: ModelOptions | None = None,
    image_options: ImageOptions | None = None,
    progress: Progress | None = None,
) -> FolderReport:
    """Attack every image under ``images`` and save one exact 8-bit PNG per image under ``out``
    at the same relative path, plus ``report.json`` and ``report.csv``.

    Args:
        model: a ``.keras``/``.h5`` path (loaded per ``model_options``), a Keras model or a
            :class:`~robustkit.models.Classifier`.
        images: a folder (searched recursively) or one image file.
        out: the output folder, or :class:`OutputOptions` (``overwrite``). Rerunning an
            interrupted run with the same settings finishes it.
        attack: any robustkit attack; ``quantize=255`` (PGD, FGSM) makes it finish on the 8-bit
            grid, otherwise its images are rounded onto the grid inside the ball.
        target: None (untargeted), "least-likely" or "random" (per image), or one class for
            every image: an index or a class name.
        save_perturbation: also write an amplified ``NAME.perturbation.png`` per image.
        image_options: labels, class names, resizing, strictness and batch size. Labels come
            from a labels CSV, else class subfolders, else the model's own clean predictions.
        progress: called as ``progress(images handled, images this run handles)`` at the start
            and after each batch.

    Returns:
        The report: per-image rows (predictions and success of the saved PNGs, success before
        rounding, Linf and L2 distances in pixel units) and the summary.
    """
    output = OutputOptions.of(out)
    image_options = image_options or ImageOptions()
    with locked_output(output.out, images):
        classifier = load_model(model, model_options)
        log_linf_grid(attack, classifier.bounds)
        inputs = RunInputs.open(model, classifier, images, image_options)
        if inputs.folder.label_source == "none":
            logger.info("no labels found: the model's own clean predictions are used as labels.")
        run = AttackRun(
            inputs,
            output,
            attack,
            target=_resolve_target(target, inputs),
            save_perturbation=save_perturbation,
        )
        return run.execute(progress)
