"""`evaluate()`: robust accuracy under an attack suite, with the sanity checks that keep it honest.

For each eps (ascending) the suite runs as a cascade: every attack sees only the examples still
robust, gradient-free attacks last, and each example keeps its strongest adversarial. The
worst case per example is robust = correctly classified and broken by no attack.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import robustkit
from robustkit.errors import InputError
from robustkit.evaluation.cascade import PER_EXAMPLE
from robustkit.evaluation.checkpoint import EvaluationCheckpoint
from robustkit.evaluation.checks import (
    CheckAttacker,
    CheckContext,
    CheckData,
    CheckFindings,
    SuiteRun,
    run_checks,
    select_checks,
)
from robustkit.evaluation.engine import Executor
from robustkit.evaluation.main_pass import run_main_pass
from robustkit.evaluation.report import AttackOutcome, ExampleRecords, RobustnessReport
from robustkit.evaluation.sources import (
    STREAM_CHUNK_BATCHES,
    ArraySource,
    ExampleSource,
    image_array,
)
from robustkit.evaluation.suites import resolve_suite
from robustkit.models import Classifier, check_classifier, weights_digest
from robustkit.norms import NORMS, Norm, make_norm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of one attack pass or check: ``done`` of ``total`` examples.

    stage: "attack" or "check"; name: the attack or check; eps: the radius (None when the
    check runs at no particular eps); target: 1-based target pass of a top-k targeted attack
    and ``targets`` passes in all (1 and 1 otherwise).
    """

    stage: str
    name: str
    eps: float | None
    done: int
    total: int
    target: int = 1
    targets: int = 1


ProgressCallback = Callable[[ProgressEvent], None]


def _read_source(classifier: Classifier, data: Any) -> ExampleSource:
    """The examples of ``data``: an ExampleSource as it is (labels checked), or (x, y) /
    {"x": .., "y": ..} as an ArraySource of float32 images [N, H, W, C] and int64 labels [N]."""
    if isinstance(data, ExampleSource):
        if len(data) == 0:
            raise InputError("data holds no images.")
        classifier.validate_labels(data.labels, len(data), name="labels")
        return data
    if isinstance(data, Mapping):
        if "x" not in data or "y" not in data:
            raise InputError("data as a mapping needs keys 'x' (images) and 'y' (labels).")
        x, y = data["x"], data["y"]
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise InputError(
            "data must be (x, y): images [N, H, W, C] in bounds and labels [N], or an "
            "ExampleSource."
        )
    if y is None:
        raise InputError("Robust accuracy needs the true labels y; got None.")
    images = classifier.validate_images(x, name="x").numpy()
    if len(images) == 0:
        raise InputError("data holds no images.")
    labels = classifier.validate_labels(y, len(images), name="y").numpy().astype(np.int64)
    return ArraySource(images, labels)


def _chunk_size(chunk_size: int | None, source: ExampleSource, executor: Executor) -> int:
    """Examples per chunk: as given; by default every example of arrays in memory, and
    STREAM_CHUNK_BATCHES compiled batches (on every replica) of a streamed source."""
    if chunk_size is None:
        if isinstance(source, ArraySource):
            return len(source)
        return STREAM_CHUNK_BATCHES * executor.batch_size * executor.replicas
    if int(chunk_size) < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size!r}.")
    return int(chunk_size)


def _resolve_threat(threat: str | Norm, epsilons: Sequence[float] | None) -> tuple[str, list]:
    """(norm name, ascending distinct radii)."""
    if isinstance(threat, Norm):
        name, default = threat.name, [threat.eps]
    elif isinstance(threat, str) and threat.lower() in NORMS:
        name, default = threat.lower(), None
    else:
        raise InputError(f"threat must be Linf(eps), L2(eps), 'linf' or 'l2'; got {threat!r}.")
    values = default if epsilons is None else [float(eps) for eps in epsilons]
    if not values:
        raise InputError("Give at least one eps: epsilons=[...] or threat=Linf(eps).")
    for eps in values:
        make_norm(name, eps)  # validates
    if len(set(values)) != len(values):
        raise InputError(f"epsilons must be distinct, got {values}.")
    return name, sorted(values)


def _environment(executor: Executor, strategy: Any) -> dict[str, Any]:
    return {
        "robustkit": robustkit.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "strategy": None if strategy is None else type(strategy).__name__,
        "replicas": executor.replicas,
    }


def _cost(outcomes: Sequence[AttackOutcome]) -> dict[str, Any]:
    """Evaluations spent, what the full budget would cost, and the share."""
    cost: dict[str, Any] = {
        key: sum(getattr(outcome, key) for outcome in outcomes)
        for key in (
            "gradient_evaluations",
            "forward_evaluations",
            "full_budget_gradient_evaluations",
            "full_budget_forward_evaluations",
        )
    }
    full = cost["full_budget_gradient_evaluations"] + cost["full_budget_forward_evaluations"]
    used = cost["gradient_evaluations"] + cost["forward_evaluations"]
    cost["share_of_full_budget"] = used / full if full else None
    return cost


def _describe(
    specs: Sequence[Any], attacks: Sequence[Any], epsilons: Sequence[float], num_classes: int
) -> list[dict[str, Any]]:
    """Each suite attack's options, its full config at every eps and its budget."""
    descriptions = []
    for spec, attack in zip(specs, attacks, strict=True):
        configs = [{**attack.config, "eps": eps} for eps in epsilons]
        if "rel_step_size" in attack.config:
            for config in configs:
                config["step_size"] = float(attack.step_at(config["eps"]))
        descriptions.append(
            {
                **spec.describe(),
                "configs": configs,
                "full_budget_per_example": attack.budget(num_classes),
            }
        )
    return descriptions


def evaluate(
    classifier: Classifier,
    data: Any,
    threat: str | Norm = "linf",
    epsilons: Sequence[float] | None = None,
    *,
    suite: str | Sequence[Any] = "standard",
    seed: int = 0,
    strategy: Any = None,
    batch_size: int = 256,
    cascade: bool = True,
    checks: str | Sequence[str | int] | None = "all",
    check_samples: int = 100,
    per_example: bool = False,
    return_images: bool = False,
    progress: ProgressCallback | None = None,
    chunk_size: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> RobustnessReport:
    """Measure robust accuracy of ``classifier`` on ``data`` under an attack suite.

    Args:
        classifier: the model, in pixel space.
        data: (x, y) or {"x": x, "y": y}: images [N, H, W, C] float32 in the classifier's
            bounds and true labels [N]; or an :class:`ExampleSource`, whose images are read
            one chunk at a time (bounded memory; e.g. an image folder).
        threat: ``Linf(eps)`` / ``L2(eps)``, or "linf" / "l2" with ``epsilons``.
        epsilons: radii in pixel units (e.g. [0.1, 0.2, 0.3]); default the threat's eps.
        suite: "standard" (AutoAttack's: APGD-CE, APGD-T, FAB-T, Square), "plus", "quick"
            (APGD-CE, APGD-T over 3 targets), or a list of SuiteAttack / attack instances
            (their step sizes scale with eps).
        seed: seed of every random draw; the same seed gives the same report numbers, and
            each attack finds what the same attack called with this seed finds.
        strategy: a ``tf.distribute`` strategy; chunks of ``batch_size`` examples are spread
            over its replicas, with results identical to one device.
        batch_size: examples per compiled chunk (per replica).
        cascade: True: each attack sees only examples still robust (cheap). False: every
            attack runs on every correctly classified example (each attack's own accuracy).
        checks: "all", None, or names / numbers (1-9) of the sanity checks to run.
        check_samples: size of the random subsample the extra-compute checks use.
        per_example: keep per-example records in the report.
        return_images: keep the adversarial images [E, N, H, W, C] in the report.
        progress: called with a :class:`ProgressEvent` after each chunk.
        chunk_size: examples read, attacked under every eps and checkpointed together; by
            default all of in-memory data, and ``STREAM_CHUNK_BATCHES`` batches of a source.
            Examples' results do not depend on it (each draws from its own key).
        checkpoint_dir: a folder where every finished (chunk, eps, attack) cell is saved;
            rerun with the same arguments after an interruption, the evaluation continues
            from there and gives the same report (timings aside). A folder holding another
            evaluation's checkpoint is refused. The caller removes it when done.
    """
    started = time.perf_counter()
    check_classifier(classifier)
    if int(check_samples) < 1:
        raise InputError(f"check_samples must be >= 1, got {check_samples!r}.")
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    source = _read_source(classifier, data)
    norm_name, epsilons = _resolve_threat(threat, epsilons)
    suite_name, specs = resolve_suite(suite)
    check_names = select_checks(checks)
    executor = Executor(classifier, strategy, batch_size)
    n, y = len(source), source.labels
    chunk = _chunk_size(chunk_size, source, executor)
    # Built once: the radius is a tensor argument, so each attack traces once for every eps.
    attacks = [(spec, spec.build(make_norm(norm_name, epsilons[0]), seed=seed)) for spec in specs]
    descriptions = _describe(
        specs, [attack for _, attack in attacks], epsilons, classifier.num_classes
    )
    store = None
    if checkpoint_dir is not None:
        identity = {
            "model_weights_sha256": weights_digest(classifier),
            "input_shape": list(classifier.input_shape),
            "bounds": list(classifier.bounds),
            "preprocessing": classifier.preprocessing.to_dict(),
            "examples": {"count": n, **source.identity()},
            "norm": norm_name,
            "epsilons": epsilons,
            "attacks": descriptions,
            "cascade": cascade,
            "seed": int(seed),
            "chunk_size": chunk,
            "batch_size": executor.batch_size,
            "replicas": executor.replicas,
            "return_images": return_images,
        }
        store = EvaluationCheckpoint(checkpoint_dir, identity)

    def report(name: str, eps: float, p: int, passes: int, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent("attack", name, eps, done, total, p + 1, passes))

    main = run_main_pass(
        executor,
        attacks,
        norm_name,
        epsilons,
        source,
        seed=seed,
        cascade=cascade,
        keep_images=return_images,
        chunk_size=chunk,
        checkpoint=store,
        progress=report,
    )
    clean_logits, results = main.clean_logits, main.results
    clean_seconds = main.clean_seconds
    clean_pred = clean_logits.argmax(axis=1).astype(np.int64)
    correct = clean_pred == y
    logger.info("clean accuracy %.4f on %d examples", correct.mean(), n)
    verification = {
        key: sum(result.verification[key] for result in results)
        for key in ("rechecked", "outside_ball", "disagreements")
    }
    outcomes = [outcome for result in results for outcome in result.outcomes]
    for outcome in outcomes:
        logger.info(
            "eps %g %s: robust accuracy %.4f", outcome.eps, outcome.attack, outcome.robust_accuracy
        )
    attacks_seconds = time.perf_counter() - started - clean_seconds

    records = ExampleRecords(
        labels=y,
        clean_pred=clean_pred,
        **{name: np.stack([getattr(result, name) for result in results]) for name in PER_EXAMPLE},
        attacked=np.stack([result.attacked for result in results], axis=1),
        broken=np.stack([result.broken for result in results], axis=1),
    )

    def check_progress(name: str, eps: float | None, done: int, total: int) -> None:
        if progress is not None:
            progress(ProgressEvent("check", name, eps, done, total))

    rng = np.random.default_rng(seed)
    subsample = np.sort(rng.choice(n, size=min(int(check_samples), n), replace=False))
    images = image_array(source)
    data = CheckData(classifier, images, y, clean_logits, subsample, executor.batch_size)
    suite_run = SuiteRun(
        specs=specs,
        attacks=[attack for _, attack in attacks],
        norm_name=norm_name,
        epsilons=epsilons,
        cascade=cascade,
        seed=seed,
        records=records,
        verification=verification,
    )
    context = CheckContext(
        data=data,
        suite=suite_run,
        attacker=CheckAttacker(executor, data, norm_name, seed, check_progress),
        findings=CheckFindings.none(len(epsilons), n),
    )
    check_results = run_checks(context, check_names)
    for check in check_results:
        if check.verdict in ("warn", "fail"):
            logger.warning("check %d %s: %s", check.number, check.verdict, check.explanation)
    robust_before_checks = [float(row.mean()) for row in records.robust]
    verification["broken_by_checks"] = context.findings.lower(records)
    checks_seconds = time.perf_counter() - started - clean_seconds - attacks_seconds

    return RobustnessReport(
        norm=norm_name,
        bounds=classifier.bounds,
        epsilons=epsilons,
        suite=suite_name,
        attacks=descriptions,
        mode="cascade" if cascade else "independent",
        seed=int(seed),
        num_examples=n,
        num_classes=classifier.num_classes,
        logits_source=classifier.logits_source,
        clean_accuracy=float(correct.mean()),
        robust_accuracy=[float(row.mean()) for row in records.robust],
        robust_accuracy_before_checks=robust_before_checks,
        outcomes=outcomes,
        verification=verification,
        checks=check_results,
        cost=_cost(outcomes),
        timing={
            "total": time.perf_counter() - started,
            "clean": clean_seconds,
            "attacks": attacks_seconds,
            "checks": checks_seconds,
        },
        settings={
            "batch_size": executor.batch_size,
            "check_samples": len(subsample),
            "checks": check_names,
        },
        environment=_environment(executor, strategy),
        examples=records if per_example else None,
        adversarial_images=np.stack([r.x_adv for r in results]) if return_images else None,
    )
