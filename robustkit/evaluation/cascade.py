"""One eps of an evaluation: the suite's attacks run in turn, each example keeps its strongest
adversarial, and every claimed adversarial is re-checked by a fresh forward pass before it
counts: the fresh pass decides, and disagreements are reported.

Cascade mode attacks only the examples still robust when an attack's turn comes, so each
example stops costing anything once it is broken; independent mode runs every attack on every
correctly classified example (each attack's own accuracy, at full cost). Either way the worst
case is the per-example AND over the attacks: robust = clean-correct and broken by none.
Examples broken at a smaller radius are carried over (:func:`carry_over`): the same adversarial
lies in the larger ball, so they are broken there too, whatever the attacks find there. The
attacks still run on them (they break fast, with early stopping), so ``broken`` keeps what each
attack found at each radius and a suite that fails at larger radii stays visible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robustkit.attacks import is_robust
from robustkit.evaluation.engine import Executor
from robustkit.evaluation.report import AttackOutcome
from robustkit.evaluation.suites import SuiteAttack
from robustkit.models import Classifier
from robustkit.norms import Norm, ball_slack

# (attack name, pass number, passes, examples done, examples in the pass)
PassProgress = Callable[[str, int, int, int, int], None]

NOT_ATTACKED = -2  # broken_by of an example misclassified before any attack
UNBROKEN = -1  # broken_by of an example no attack broke
BY_CHECK = -3  # broken_by of an example only a sanity check's attack broke
# CascadeResult's per-example arrays [m] (attacked and broken are [A, m], x_adv [m, H, W, C])
PER_EXAMPLE = (
    "robust",
    "broken_by",
    "adversarial_pred",
    "adversarial_margin",
    "linf",
    "l2",
    "evaluations",
)


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Best other logit minus the logit of ``labels`` [m] (> 0: misclassified)."""
    own = np.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    others = logits.copy()
    np.put_along_axis(others, labels[:, None], -np.inf, axis=1)
    return (others.max(axis=1) - own).astype(np.float32)


def top_other_classes(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """[k', m] the k' = min(k, K - 1) classes with the highest logits other than the label,
    most likely first."""
    order = np.argsort(-logits, axis=1, kind="stable")
    others = order[order != labels[:, None]].reshape(len(labels), -1)
    return others[:, : min(k, others.shape[1])].T.astype(np.int64)


@dataclass
class CascadeResult:
    """Per-example results for m examples and A attacks (see ExampleRecords), the adversarial
    images kept (when asked for), per-attack outcomes and verification counts."""

    robust: np.ndarray
    broken_by: np.ndarray
    adversarial_pred: np.ndarray
    adversarial_margin: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    evaluations: np.ndarray
    attacked: np.ndarray
    broken: np.ndarray
    x_adv: np.ndarray | None
    outcomes: list[AttackOutcome]
    verification: dict[str, int]


def _distances(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (Linf, L2) norms [m] of delta [m, ...]."""
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    linf = np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(len(delta))
    return linf.astype(np.float32), np.linalg.norm(flat, axis=1).astype(np.float32)


def within_ball(
    norm_name: str, eps: float, x_adv: np.ndarray, x: np.ndarray, bounds: tuple[float, float]
) -> np.ndarray:
    """bool [m]: each x_adv lies inside the bounds and in the ``norm_name`` ball of radius eps
    around x, up to float32 round-off at the bounds' scale (:func:`robustkit.norms.ball_slack`)."""
    linf, l2 = _distances(x_adv - x)
    distance = linf if norm_name == "linf" else l2
    dimension = int(np.prod(x.shape[1:]))
    slack = ball_slack(norm_name, eps, bounds, dimension)
    low, high = bounds
    in_bounds = np.all((x_adv >= low) & (x_adv <= high), axis=tuple(range(1, x.ndim)))
    return (distance <= eps + slack) & in_bounds


def start_cascade(
    clean_logits: np.ndarray, y: np.ndarray, num_attacks: int, x: np.ndarray | None
) -> CascadeResult:
    """The state before any attack for m examples with true labels y [m] and clean logits
    [m, K]: the correctly classified are robust; ``x`` [m, H, W, C] when images are kept."""
    m = len(y)
    clean_pred = clean_logits.argmax(axis=1)
    correct = clean_pred == y
    return CascadeResult(
        robust=correct.copy(),
        broken_by=np.where(correct, UNBROKEN, NOT_ATTACKED).astype(np.int64),
        adversarial_pred=clean_pred.astype(np.int64),
        adversarial_margin=margins(clean_logits, y),
        linf=np.zeros(m, np.float32),
        l2=np.zeros(m, np.float32),
        evaluations=np.zeros(m, np.int64),
        attacked=np.zeros((num_attacks, m), bool),
        broken=np.zeros((num_attacks, m), bool),
        x_adv=None if x is None else x.copy(),
        outcomes=[],
        verification={"rechecked": 0, "outside_ball": 0, "disagreements": 0},
    )


def still_robust(result: CascadeResult, correct: np.ndarray, a: int, cascade: bool) -> np.ndarray:
    """bool [m]: robust once attack ``a`` has run (cascade: against attacks 0..a together;
    independent: against attack a alone)."""
    found = (result.broken_by >= 0) & (result.broken_by <= a) if cascade else result.broken[a]
    return is_robust(correct, found)


def run_attack(
    executor: Executor,
    state: CascadeResult,
    a: int,
    attack_pair: tuple[SuiteAttack, Any],
    norm: Norm,
    x: np.ndarray,
    y: np.ndarray,
    clean_logits: np.ndarray,
    keys: np.ndarray,
    *,
    cascade: bool = True,
    progress: PassProgress | None = None,
) -> None:
    """Run the ``a``-th built suite attack (spec, attack) on x [m, H, W, C] and advance
    ``state`` (from :func:`start_cascade`, attacks 0..a-1 done) in place; see
    :func:`run_cascade`."""
    spec, attack = attack_pair
    classifier: Classifier = executor.classifier
    bounds = classifier.bounds
    correct = clean_logits.argmax(axis=1) == y
    broken_by, broken, verification = state.broken_by, state.broken, state.verification
    started = time.perf_counter()
    spent = 0
    targets = top_other_classes(clean_logits, y, spec.top_k_targets)
    passes: list[np.ndarray | None] = list(targets) if spec.top_k_targets else [None]
    for p, pass_targets in enumerate(passes):
        todo = correct & ~broken[a]
        if cascade:
            todo &= broken_by == UNBROKEN
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            continue

        def report(
            done: int, total: int, name: str = spec.name, p: int = p, of: int = len(passes)
        ) -> None:
            if progress is not None:
                progress(name, p, of, done, total)

        out = executor.run(
            attack,
            x[idx],
            y[idx],
            keys[idx],
            norm.eps,
            targets=None if pass_targets is None else pass_targets[idx],
            progress=report,
        )
        state.attacked[a, idx] = True
        state.evaluations[idx] += out.evaluations
        spent += int(out.evaluations.sum())
        hit, fresh_logits = verify(executor, norm, out.x_adv, x[idx], y[idx], out.logits)
        claimed = out.logits.argmax(axis=1) != y[idx]
        inside = within_ball(norm.name, norm.eps, out.x_adv, x[idx], bounds)
        verification["outside_ball"] += int(np.sum(claimed & ~inside))
        verification["rechecked"] += int(np.sum(claimed & inside))
        verification["disagreements"] += int(np.sum(claimed & inside & ~hit))
        broken[a, idx[hit]] = True
        d_linf, d_l2 = _distances(out.x_adv - x[idx])
        out_margin = margins(fresh_logits, y[idx])
        unbroken = broken_by[idx] == UNBROKEN
        newly = hit & unbroken
        keep = newly | (unbroken & inside & (out_margin > state.adversarial_margin[idx]))
        rows = idx[keep]
        broken_by[idx[newly]] = a
        state.adversarial_pred[rows] = fresh_logits[keep].argmax(axis=1)
        state.adversarial_margin[rows] = out_margin[keep]
        state.linf[rows], state.l2[rows] = d_linf[keep], d_l2[keep]
        if state.x_adv is not None:
            state.x_adv[rows] = out.x_adv[keep]
    robust_after = still_robust(state, correct, a, cascade)
    budget = attack.budget(classifier.num_classes) * int(correct.sum()) * len(passes)
    state.outcomes.append(
        AttackOutcome(
            attack=spec.name,
            eps=norm.eps,
            attacked=int(state.attacked[a].sum()),
            broken=int(broken[a].sum()),
            robust_accuracy=float(robust_after.mean()) if len(y) else 0.0,
            gradient_evaluations=0 if spec.gradient_free else spent,
            forward_evaluations=spent if spec.gradient_free else 0,
            full_budget_gradient_evaluations=0 if spec.gradient_free else budget,
            full_budget_forward_evaluations=budget if spec.gradient_free else 0,
            wall_time_s=time.perf_counter() - started,
        )
    )
    state.robust = is_robust(correct, broken_by != UNBROKEN)


def run_cascade(
    executor: Executor,
    attacks: Sequence[tuple[SuiteAttack, Any]],
    norm: Norm,
    x: np.ndarray,
    y: np.ndarray,
    clean_logits: np.ndarray,
    keys: np.ndarray,
    *,
    cascade: bool = True,
    keep_images: bool = False,
    progress: PassProgress | None = None,
) -> CascadeResult:
    """Run the built suite ``attacks`` (spec, attack) in the ball ``norm`` on x [m, H, W, C]
    with true labels y [m] and clean logits [m, K].

    ``keys`` [m, 2] are the examples' random keys. An adversarial counts only if it is
    inside the ball and the bounds and a fresh forward pass misclassifies it; claims the fresh
    pass does not confirm are counted as disagreements (a deterministic model has none).
    """
    state = start_cascade(clean_logits, y, len(attacks), x if keep_images else None)
    for a, attack_pair in enumerate(attacks):
        run_attack(
            executor,
            state,
            a,
            attack_pair,
            norm,
            x,
            y,
            clean_logits,
            keys,
            cascade=cascade,
            progress=progress,
        )
    return state


def merge_results(
    parts: Sequence[CascadeResult], correct: np.ndarray, cascade: bool
) -> CascadeResult:
    """One eps's results over consecutive chunks of examples as one result, as if the chunks
    had been attacked together: per-example arrays joined, counts and costs summed, each
    attack's robust accuracy recomputed over all examples. ``correct`` bool [N]: clean-correct."""
    first = parts[0]
    if len(parts) == 1:
        return first

    def joined(name: str, axis: int = 0) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts], axis=axis)

    merged = CascadeResult(
        **{name: joined(name) for name in PER_EXAMPLE},
        attacked=joined("attacked", axis=1),
        broken=joined("broken", axis=1),
        x_adv=None if first.x_adv is None else joined("x_adv"),
        outcomes=[],
        verification={
            key: sum(part.verification[key] for part in parts) for key in first.verification
        },
    )
    for a, outcome in enumerate(first.outcomes):
        summed = {
            key: sum(getattr(part.outcomes[a], key) for part in parts)
            for key in (
                "attacked",
                "broken",
                "gradient_evaluations",
                "forward_evaluations",
                "full_budget_gradient_evaluations",
                "full_budget_forward_evaluations",
                "wall_time_s",
            )
        }
        accuracy = float(still_robust(merged, correct, a, cascade).mean())
        merged.outcomes.append(
            AttackOutcome(
                attack=outcome.attack, eps=outcome.eps, robust_accuracy=accuracy, **summed
            )
        )
    return merged


def verify(
    executor: Executor,
    norm: Norm,
    x_adv: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    logits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(hit [m], logits [m, K]): which x_adv [m, ...] are verified adversarials -- inside the
    ball and the bounds and misclassified by a fresh forward pass -- and the logits that
    decide (fresh ones for the candidates the attack claimed, the attack's own elsewhere)."""
    classifier = executor.classifier
    inside = within_ball(norm.name, norm.eps, x_adv, x, classifier.bounds)
    candidates = inside & (logits.argmax(axis=1) != y)
    decided = logits.copy()
    if candidates.any():
        decided[candidates] = classifier.predict_logits(x_adv[candidates], executor.batch_size)
    hit = candidates & (decided.argmax(axis=1) != y)
    return hit, decided


def carry_over(smaller: CascadeResult, larger: CascadeResult) -> None:
    """Mark in ``larger`` (in place) the examples broken at the smaller radius that no attack
    broke at the larger one: their adversarial lies in the larger ball too."""
    rows = ~smaller.robust & larger.robust
    larger.robust[rows] = False
    larger.broken_by[rows] = smaller.broken_by[rows]
    larger.adversarial_pred[rows] = smaller.adversarial_pred[rows]
    larger.adversarial_margin[rows] = smaller.adversarial_margin[rows]
    larger.linf[rows], larger.l2[rows] = smaller.linf[rows], smaller.l2[rows]
    if larger.x_adv is not None and smaller.x_adv is not None:
        larger.x_adv[rows] = smaller.x_adv[rows]
