"""``robustkit attack MODEL IMAGES``: adversarial PNGs (exact 8-bit) and a report for a folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click
import numpy as np
import tensorflow as tf

from robustkit.attacks import FGSM, PGD, AttackResult, is_robust
from robustkit.io import (
    ImageBatch,
    ImageFolder,
    from_uint8,
    perturbation_codes,
    read_image,
    to_uint8,
    write_csv,
    write_json,
    write_png,
)
from robustkit.io.pixels import LEVELS
from robustkit.norms import ball_slack
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


def saved_codes(attack: PGD, x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    """8-bit codes of the adversarial images, inside the eps-ball after rounding.

    ``x`` is on the 8-bit grid and a quantized attack leaves ``x_adv`` on it, so rounding only
    removes float round-off; should rounding ever leave the ball, the perturbation is snapped
    back onto the grid inside it (the norm's own rule).
    """
    codes = to_uint8(x_adv)
    delta = from_uint8(codes) - x
    slack = ball_slack(attack.norm.name, attack.norm.eps, (0.0, 1.0), int(np.prod(x.shape[1:])))
    if np.all(attack.norm.distance(delta).numpy() <= attack.norm.eps + slack):
        return codes
    snapped = attack.norm.snap_to_grid(delta, 1.0 / LEVELS).numpy()
    return to_uint8(np.clip(x + snapped, 0.0, 1.0))


class AttackRun(FolderRun):
    """One attack over an image folder: exact 8-bit PNGs checked on disk, report rows."""

    journal_name = JOURNAL
    report_names = (REPORT_JSON, REPORT_CSV)
    progress_label = "attacking"

    def __init__(
        self,
        classifier: Any,
        attack: PGD,
        folder: ImageFolder,
        out: Path,
        *,
        target: int | str | None,
        save_perturbation: bool,
        batch_size: int,
        console: Console,
    ) -> None:
        suffixes = [".png", ".perturbation.png"] if save_perturbation else [".png"]
        super().__init__(folder, out, suffixes=suffixes, batch_size=batch_size, console=console)
        self.classifier = classifier
        self.attack = attack
        self.target = target
        self.gradient_steps = 0

    def _target_for(self, n: int) -> Any:
        if isinstance(self.target, int):
            return np.full((n,), self.target, dtype=np.int64)
        return self.target

    def process_batch(self, batch: ImageBatch) -> list[dict[str, Any]]:
        """Attack one batch, write its PNGs, re-read them and judge the saved pixels."""
        x = batch.pixels()
        result: AttackResult = self.attack(
            self.classifier,
            x,
            batch.labels,
            target=self._target_for(len(x)),
            batch_size=len(x),
            first_index=self.batch_index * self.batch_size,
        )
        self.gradient_steps += result.gradient_steps
        codes = saved_codes(self.attack, x, result.x_adv)
        reread = []
        for entry, clean, image in zip(batch.entries, batch.codes, codes, strict=True):
            outputs = self.plan[entry.relative]
            write_png(self.out / outputs[0], image)
            if len(outputs) > 1:
                delta = from_uint8(image) - from_uint8(clean)
                write_png(self.out / outputs[1], perturbation_codes(delta))
            saved, _ = read_image(self.out / outputs[0], channels=image.shape[-1])
            if not np.array_equal(saved, image):
                raise OSError(f"{self.out / outputs[0]} did not read back as written.")
            reread.append(saved)
        x_saved = from_uint8(np.stack(reread))
        probabilities = tf.nn.softmax(self.classifier.predict_logits(x_saved)).numpy()
        adv_pred = probabilities.argmax(axis=1)
        goal = result.labels if result.target is None else result.target
        success = adv_pred == goal if result.target is not None else adv_pred != goal
        steps = np.stack(reread).astype(np.int16) - batch.codes.astype(np.int16)
        delta = steps.reshape(len(x), -1) / LEVELS  # exact, in [0, 1] pixel units
        before = result.success_unquantized
        rows = []
        for i, entry in enumerate(batch.entries):
            label = None if result.labels_from_model else int(result.labels[i])
            rows.append(
                {
                    "path": entry.relative,
                    "status": "attacked",
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
                }
            )
        return rows


def summarize(rows: list[dict[str, Any]], label_source: str) -> dict[str, Any]:
    """Accuracy, success and distance figures over the report rows."""
    attacked = [row for row in rows if row["status"] == "attacked"]
    n = len(attacked)

    def share(flags: list[bool]) -> float | None:
        return float(np.mean(flags)) if flags else None

    def stat(key: str, reduce: Any) -> float | None:
        return float(reduce([row[key] for row in attacked])) if attacked else None

    has_labels = label_source != "none"
    success = [row["success"] for row in attacked]
    before = [row["success_before_quantization"] for row in attacked]
    return {
        "images_found": len(rows),
        "images_attacked": n,
        "images_skipped": len(rows) - n,
        "label_source": label_source if has_labels else "model predictions",
        "clean_accuracy": share([row["clean_pred"] == row["label"] for row in attacked])
        if has_labels
        else None,
        "robust_accuracy": share(
            [
                bool(is_robust(row["clean_pred"] == row["label"], row["adv_pred"] != row["label"]))
                for row in attacked
            ]
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
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def print_summary(console: Console, summary: dict[str, Any], out: Path) -> None:
    """The short human summary on stdout."""
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
    console.say(f"speed            {summary['images_per_second']:.1f} images/s")
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
@handle_errors
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
    console = Console(quiet=quiet, json_output=json_output)
    check_output_folder(out, images)
    adversary = build_attack(
        attack_name, norm, eps, steps, step_size, restarts, random_start, loss, seed
    )
    grid_steps = eps * LEVELS
    kept = math.floor(grid_steps + 1e-6)  # the attack's own rule (Linf.snap_to_grid)
    if norm == "linf" and grid_steps - kept > 1e-6:
        console.note(
            f"eps {eps:g} is {grid_steps:g} steps of the 8-bit grid; saved pixels move by at most "
            f"{kept} steps ({kept / LEVELS:.4f})."
        )
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
    if folder.label_source == "none":
        console.note("no labels found: the model's own clean predictions are used as labels.")
    target = (
        target_mode
        if target_class is None
        else parse_class(target_class, folder, classifier.num_classes, "--target-class")
    )
    run = AttackRun(
        classifier,
        adversary,
        folder,
        out,
        target=target,
        save_perturbation=save_perturbation,
        batch_size=batch_size,
        console=console,
    )
    refuse_overwriting_inputs(run.output_files(), [entry.path for entry in folder.entries])
    settings = {
        "model": str(Path(model).resolve()),
        "model_bytes": Path(model).stat().st_size,
        "images": str(Path(images).resolve()),
        "attack": adversary.config,
        "target": target,
        "labels": None if labels is None else str(labels.resolve()),
        "class_names": None if class_names is None else str(class_names.resolve()),
        "folder_labels": folder_labels,
        "resize": resize,
        "preprocessing": classifier.preprocessing.to_dict(),
        "save_perturbation": save_perturbation,
        "batch_size": batch_size,
    }
    done = resume_or_start(run, settings, overwrite, console)
    for skip in folder.skipped:
        if skip.relative not in done:
            console.warn(f"skipped {skip.relative}: {skip.reason}")
    pre_skipped = [skip_row(s.relative, s.reason) for s in folder.skipped if s.relative not in done]
    new_rows, attacked, seconds = run.run(done)
    rows = sorted([*done.values(), *pre_skipped, *new_rows], key=lambda row: row["path"])
    summary = summarize(rows, folder.label_source)
    summary.update(
        {
            "images_attacked_this_run": attacked,
            "resumed": bool(done),
            "seconds": seconds,
            "images_per_second": attacked / seconds if seconds > 0 else math.nan,
            "gradient_steps_this_run": run.gradient_steps,
            "attack": adversary.config,
            "seed": seed,
            "target": target,
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
    write_csv(out / REPORT_CSV, rows, ROW_FIELDS)
    run.journal.remove()
    if json_output:
        console.print_json(report)
    else:
        print_summary(console, summary, out)
    return 0
