"""Resumable runs over image folders, for Python users and the ``robustkit`` command alike.

- :func:`attack_folder`: adversarial images saved as exact 8-bit PNGs, re-read from disk and
  classified again, so what is saved is what was evaluated;
- :func:`explain_folder`: saliency heatmaps, overlays and raw maps of one or every method,
  with the saliency metrics and the explanations under attack on request;
- :func:`evaluate_folder`: robust accuracy of a labelled folder or .npz, with its reports.

Every run checks its output folder (never inside the input, never over an input image, earlier
results only with ``overwrite``), holds the folder's lock while it works, and the folder runs
keep a journal so that rerunning an interrupted run finishes it with the same bytes. Progress
goes to a callback; notes and warnings go to the ``robustkit.runs`` logger.
"""

from robustkit.runs.attack import AttackRun, attack_folder, saved_codes
from robustkit.runs.evaluate import SUITE_NAMES, evaluate_folder, read_labelled_images
from robustkit.runs.explain import ExplainRun, explain_folder
from robustkit.runs.explain_options import RenderOptions, UnderAttack
from robustkit.runs.folder import FolderReport, FolderRun, RunInputs, RunStats, summarize_notes
from robustkit.runs.lock import RunLock
from robustkit.runs.options import (
    DEFAULT_BATCH_SIZE,
    ImageOptions,
    ModelOptions,
    OutputOptions,
    load_model,
)
from robustkit.runs.outputs import check_output_folder, plan_outputs

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "SUITE_NAMES",
    "AttackRun",
    "ExplainRun",
    "FolderReport",
    "FolderRun",
    "ImageOptions",
    "ModelOptions",
    "OutputOptions",
    "RenderOptions",
    "RunInputs",
    "RunLock",
    "RunStats",
    "UnderAttack",
    "attack_folder",
    "check_output_folder",
    "evaluate_folder",
    "explain_folder",
    "load_model",
    "plan_outputs",
    "read_labelled_images",
    "saved_codes",
    "summarize_notes",
]
