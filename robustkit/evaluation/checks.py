"""Sanity checks that catch an evaluation fooling itself (Carlini et al. 2019, "On Evaluating
Adversarial Robustness"; Croce & Hein 2020, AutoAttack).

Each check returns a :class:`~robustkit.evaluation.CheckResult` with a verdict ("pass", "warn",
"fail", "not run") and an explanation in words. Checks 5 and 7 read the main results only;
checks 4 and 9 add one raw FGSM step per example (and 9 re-attacks the misclassified ones);
checks 1, 2, 3, 6 and 8 run extra passes or attacks on a fixed random subsample. Each says so.

Adversarials that checks 4 and 8 find are verified like the suite's (inside the ball and the
bounds, misclassified by a fresh forward pass) and lower the headline robust accuracy, at their
eps and every larger one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.attacks import APGD, is_robust
from robustkit.errors import InputError
from robustkit.evaluation.cascade import BY_CHECK, CascadeResult, run_cascade, within_ball
from robustkit.evaluation.engine import AttackOutput, Executor, keys_for
from robustkit.evaluation.report import CheckResult, ExampleRecords
from robustkit.evaluation.suites import SuiteAttack
from robustkit.gradients import input_gradients
from robustkit.models import looks_like_probabilities
from robustkit.norms import make_norm

ZERO_GRADIENT_FAIL_SHARE = 0.01  # more examples than this with zero gradients: fail
LOGIT_NOISE_WARN = 1e-5  # relative logit change between identical passes: warn above
LOGIT_NOISE_FAIL = 1e-3  # ... fail above
SMALL_SHARE = 0.01  # share of examples below which a finding is a warning, above it a failure
DOUBLED_BUDGET = 2

CheckProgress = Callable[[str, float | None, int, int], None]  # (check, eps, done, total)


@dataclass
class CheckContext:
    """What the checks may look at: the evaluation's inputs, its results and its executor.

    ``attacks[a]`` is the suite's a-th attack as built (every eps is a run argument);
    ``subsample`` holds indices into x of the examples the extra-compute checks use; checks
    record the verified adversarials they find in ``found`` [E, N].
    """

    executor: Executor
    suite: list[SuiteAttack]
    attacks: list[Any]
    norm_name: str
    epsilons: list[float]
    x: np.ndarray
    y: np.ndarray
    clean_logits: np.ndarray
    records: ExampleRecords
    verification: dict[str, int]
    seed: int
    cascade: bool
    subsample: np.ndarray
    progress: CheckProgress | None = None
    found: np.ndarray | None = None
    _fgsm: dict[int, AttackOutput] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.found is None:
            self.found = np.zeros((len(self.epsilons), len(self.x)), bool)

    def record_adversarials(self, e: int, idx: np.ndarray, hit: np.ndarray) -> None:
        """Examples ``idx[hit]`` have a verified adversarial at the e-th eps (and so at every
        larger one)."""
        self.found[e:, idx[hit]] = True

    def apply_check_adversarials(self) -> int:
        """Lower the records by what the checks found: examples robust under the suite but
        broken by a check become broken (``broken_by`` = BY_CHECK). Returns how many (example,
        eps) pairs changed."""
        records = self.records
        newly = self.found & records.robust
        records.robust &= ~newly
        records.broken_by[newly] = BY_CHECK
        return int(newly.sum())

    @property
    def classifier(self) -> Any:
        return self.executor.classifier

    @property
    def correct(self) -> np.ndarray:
        return self.records.clean_pred == self.y

    def indices(self, mask: np.ndarray) -> np.ndarray:
        """Subsample indices where ``mask`` (over the whole data set) holds."""
        return self.subsample[mask[self.subsample]]

    def keys(self, stream: int, idx: np.ndarray) -> np.ndarray:
        """Keys [m, 2] of examples ``idx`` in a check's own random stream."""
        return keys_for(self.seed, stream, idx)

    def attack(
        self, attack: Any, idx: np.ndarray, stream: int, name: str, eps: float
    ) -> AttackOutput:
        """Run ``attack`` untargeted with the true labels on examples ``idx`` at ``eps``."""

        def report(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(name, eps, done, total)

        return self.executor.run(
            attack,
            self.x[idx],
            self.y[idx],
            self.keys(stream, idx),
            eps,
            progress=report,
        )

    def attack_cascade(
        self,
        attacks: list[tuple[SuiteAttack, Any]],
        norm: Any,
        idx: np.ndarray,
        stream: int,
        name: str,
    ) -> CascadeResult:
        """The cascade of built ``attacks`` on examples ``idx``."""

        def report(attack: str, p: int, passes: int, done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(name, norm.eps, done, total)

        return run_cascade(
            self.executor,
            attacks,
            norm,
            self.x[idx],
            self.y[idx],
            self.clean_logits[idx],
            self.keys(stream, idx),
            progress=report,
        )

    def fgsm(self, e: int) -> AttackOutput:
        """Raw FGSM at the e-th eps: one cross-entropy step of size eps with the true labels
        from every clean image, misclassified ones included, with no best-iterate choice
        (cached: checks 4 and 9 share it; one gradient evaluation per example, so no subsample
        is needed). Logits are a fresh forward pass of the stepped images."""
        if e not in self._fgsm:
            norm = make_norm(self.norm_name, self.epsilons[e])
            classifier = self.classifier
            signature = [
                tf.TensorSpec((None, *classifier.input_shape), tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ]

            @tf.function(input_signature=signature)
            def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
                gradient = input_gradients(classifier, x, y, loss="ce").gradient
                delta = norm.project(norm.eps * norm.step_direction(gradient))
                return tf.clip_by_value(x + delta, *classifier.bounds)

            size = self.executor.chunk_size
            y = self.y.astype(np.int32)
            parts = [step(self.x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]
            x_adv = np.concatenate([part.numpy() for part in parts])
            logits = classifier.predict_logits(x_adv, size)
            self._fgsm[e] = AttackOutput(x_adv, logits, np.ones(len(y), np.int64))
            if self.progress is not None:
                self.progress("single_step", norm.eps, len(y), len(y))
        return self._fgsm[e]

    def fresh_predictions(self, x: np.ndarray) -> np.ndarray:
        """Predicted classes [m] from a new forward pass."""
        if len(x) == 0:
            return np.zeros((0,), np.int64)
        low, high = self.classifier.bounds
        logits = self.classifier.predict_logits(np.clip(x, low, high), self.executor.chunk_size)
        return logits.argmax(axis=1)

    def within_ball(self, x_adv: np.ndarray, idx: np.ndarray, eps: float) -> np.ndarray:
        """bool [m]: x_adv lies inside the bounds and the eps-ball around x[idx]."""
        return within_ball(self.norm_name, eps, x_adv, self.x[idx], self.classifier.bounds)


def _worst(verdicts: Sequence[str]) -> str:
    order = ("not run", "pass", "warn", "fail")
    return max(verdicts, key=order.index, default="not run")


def _share_verdict(count: int, total: int) -> str:
    """fail above SMALL_SHARE of ``total``, warn for fewer but some, else pass."""
    if count == 0:
        return "pass"
    return "fail" if count > max(1, SMALL_SHARE * total) else "warn"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


# ----------------------------------------------------------------------------- 1-3: the model


def check_probabilities(context: CheckContext) -> CheckResult:
    """1. Attacks must run on logits, not on (log-)probabilities."""
    classifier = context.classifier
    source = classifier.logits_source
    x = context.x[context.subsample]
    inputs = classifier.preprocessing(tf.constant(x))
    try:
        raw = classifier.model(inputs, training=False)
    except TypeError:  # a plain callable without a training argument
        raw = classifier.model(inputs)
    raw_probabilities = looks_like_probabilities(np.asarray(raw))
    logits = context.clean_logits[context.subsample]
    attacked_probabilities = looks_like_probabilities(logits)
    saturated = float(np.mean(tf.nn.softmax(logits).numpy().max(axis=1) == 1.0))
    details = {
        "logits_source": source,
        "raw_outputs_are_probabilities": raw_probabilities,
        "attacked_values_are_probabilities": attacked_probabilities,
        "saturated_share": saturated,
    }
    if classifier.uses_log_probabilities:
        verdict = "fail"
        explanation = (
            "The model outputs probabilities and its logits cannot be recovered, so the attacks "
            "ascend log(probabilities), which saturate (softmax rounds to 1 in float32) and can "
            "mask gradients: robust accuracy may be overestimated. Pass a model whose last "
            "layer outputs logits."
        )
    elif attacked_probabilities:
        verdict = "fail"
        explanation = (
            "The values attacked as logits are probabilities (non-negative rows summing to 1), "
            "e.g. a softmax model declared with output='logits'. Losses on them are flat and "
            "mask gradients. Declare output='auto' or pass the pre-softmax model."
        )
    elif raw_probabilities:
        verdict = "pass"
        explanation = f"The model ends in softmax; the attacks use its logits ({source})."
    else:
        verdict = "pass"
        explanation = f"The model outputs logits ({source}); rows do not sum to 1."
    explanation += f" Outputs read on {len(context.subsample)} subsample examples."
    return CheckResult(1, "probabilities", verdict, explanation, len(context.subsample), details)


def check_zero_gradients(context: CheckContext) -> CheckResult:
    """2. Zero input gradients mean the attacks have nothing to follow (masking)."""
    classifier = context.classifier
    signature = [
        tf.TensorSpec((None, *classifier.input_shape), tf.float32),
        tf.TensorSpec((None,), tf.int32),
    ]

    @tf.function(input_signature=signature)
    def gradient_sizes(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, ...]:
        sizes = []
        for loss in ("margin", "ce"):
            flat = tf.reshape(
                input_gradients(classifier, x, y, loss=loss).gradient, (tf.shape(x)[0], -1)
            )
            sizes += [
                tf.reduce_max(tf.abs(flat), axis=1),
                tf.reduce_all(tf.math.is_finite(flat), axis=1),
            ]
        return tuple(sizes)

    idx = context.subsample
    size = context.executor.chunk_size
    parts = [
        [
            t.numpy()
            for t in gradient_sizes(
                context.x[idx[i : i + size]], context.y[idx[i : i + size]].astype(np.int32)
            )
        ]
        for i in range(0, len(idx), size)
    ]
    margin_size, margin_finite, ce_size, ce_finite = (
        np.concatenate(p) for p in zip(*parts, strict=True)
    )
    finite = margin_finite & ce_finite
    zero_margin = float(np.mean(finite & (margin_size == 0)))
    zero_ce = float(np.mean(finite & (ce_size == 0)))
    details = {
        "zero_margin_gradient_share": zero_margin,
        "zero_cross_entropy_gradient_share": zero_ce,
        "non_finite_gradient_share": float(np.mean(~finite)),
    }
    n = len(idx)
    if not finite.all():
        verdict = "fail"
        explanation = (
            f"{_percent(1 - finite.mean())} of the {n} subsample examples have NaN or Inf input "
            "gradients; gradient attacks cannot work there and their numbers are meaningless."
        )
    elif zero_margin > 0:
        verdict = "fail" if zero_margin > ZERO_GRADIENT_FAIL_SHARE else "warn"
        explanation = (
            f"{_percent(zero_margin)} of the {n} subsample examples have exactly zero input "
            "gradients of the margin loss: something (a stop-gradient, quantization or "
            "thresholding of the input) masks gradients, so gradient attacks are blind there. "
            "Trust only the gradient-free attack, or attack a differentiable surrogate (BPDA)."
        )
    else:
        verdict = "pass"
        explanation = f"Every one of the {n} subsample examples has a non-zero input gradient."
        if zero_ce > 0:
            explanation += (
                f" Cross-entropy gradients vanish on {_percent(zero_ce)} (softmax saturates in "
                "float32); the margin-loss attacks of the suite cover those."
            )
    return CheckResult(2, "zero_gradients", verdict, explanation, n, details)


def check_nondeterminism(context: CheckContext) -> CheckResult:
    """3. The same input must give the same logits every time."""
    idx = context.subsample
    x = context.x[idx]
    classifier = context.classifier
    passes = [
        context.clean_logits[idx],
        classifier.predict_logits(x, context.executor.chunk_size),
        classifier.predict_logits(x, 1),
    ]
    scale = 1.0 + float(np.max(np.abs(passes[0]))) if len(x) else 1.0
    noise = max(float(np.max(np.abs(other - passes[0]), initial=0.0)) for other in passes[1:])
    relative = noise / scale
    flips = int(sum(np.sum(other.argmax(1) != passes[0].argmax(1)) for other in passes[1:]))
    disagreements = context.verification["disagreements"]
    details = {
        "relative_logit_change": relative,
        "prediction_changes": flips,
        "adversarials_not_reproduced": disagreements,
        "adversarials_rechecked": context.verification["rechecked"],
    }
    summary = (
        f"Three forward passes of the {len(idx)} subsample examples (batched twice, then one by "
        f"one) differ by up to {relative:.2g} relative to the logit scale"
    )
    if relative > LOGIT_NOISE_FAIL or flips or disagreements:
        verdict = "fail"
        explanation = (
            f"{summary}, changing {flips} predictions; {disagreements} of "
            f"{context.verification['rechecked']} adversarials did not reproduce on a fresh "
            "pass. The forward pass is random or batch-dependent (dropout at inference, "
            "randomized defenses, batch statistics), which hides gradients from single-sample "
            "attacks: attack the expectation over the randomness (EOT) before trusting this."
        )
    elif relative > LOGIT_NOISE_WARN:
        verdict = "warn"
        explanation = f"{summary}: more than float round-off, though no prediction changed."
    else:
        verdict = "pass"
        explanation = f"{summary} (float round-off); every adversarial reproduced."
    return CheckResult(3, "nondeterminism", verdict, explanation, len(idx), details)


# ----------------------------------------------------------------------------- 4-9: the attacks


def _gradient_attacks(context: CheckContext) -> list[int]:
    return [a for a, spec in enumerate(context.suite) if not spec.gradient_free]


def check_single_step(context: CheckContext) -> CheckResult:
    """4. Iterative gradient attacks must beat one FGSM step."""
    gradient = _gradient_attacks(context)
    if not gradient:
        return CheckResult(
            4, "single_step", "not run", "The suite has no gradient attack to compare with FGSM."
        )
    n = len(context.x)
    everything = np.arange(n)
    per_eps, verdicts = [], []
    for e, eps in enumerate(context.epsilons):
        out = context.fgsm(e)
        fgsm_broken = context.correct & (out.logits.argmax(1) != context.y)
        fgsm_broken &= context.within_ball(out.x_adv, everything, eps)
        context.record_adversarials(e, everything, fgsm_broken)
        iterative_broken = context.records.broken[gradient, e].any(axis=0)
        missed = int(np.sum(fgsm_broken & context.records.robust[e]))
        fgsm_accuracy = float(np.mean(is_robust(context.correct, fgsm_broken)))
        iterative_accuracy = float(np.mean(is_robust(context.correct, iterative_broken)))
        if missed or fgsm_accuracy < iterative_accuracy:
            verdicts.append("fail")
        elif fgsm_broken.any() and fgsm_accuracy == iterative_accuracy and fgsm_accuracy > 0:
            verdicts.append("warn")
        else:
            verdicts.append("pass")
        per_eps.append(
            {
                "eps": eps,
                "fgsm_accuracy": fgsm_accuracy,
                "iterative_accuracy": iterative_accuracy,
                "missed_by_suite": missed,
                "verdict": verdicts[-1],
            }
        )
    fgsm_curve = [row["fgsm_accuracy"] for row in per_eps]
    fgsm_rises = bool(np.any(np.diff(fgsm_curve) > 0))
    verdict = _worst([*verdicts, "warn" if fgsm_rises else "pass"])
    table = "; ".join(
        f"eps {row['eps']:g}: FGSM {_percent(row['fgsm_accuracy'])} vs iterative "
        f"{_percent(row['iterative_accuracy'])}"
        for row in per_eps
    )
    where = f"one FGSM step on each of the {n} examples"
    if "fail" in verdicts:
        explanation = (
            f"A single FGSM step did at least as well as the iterative attacks and found "
            f"adversarials the suite missed ({table}; {where}). Iterative attacks are strictly "
            "stronger on honest models; this points at gradient masking or badly tuned steps. "
            "The reported numbers are too high."
        )
    elif "warn" in verdicts:
        explanation = (
            f"Iterative attacks broke no more examples than one FGSM step at some eps ({table}; "
            f"{where}); more steps should help unless gradients mislead."
        )
    else:
        explanation = f"Iterative attacks beat one FGSM step ({table}; {where})."
    if fgsm_rises:
        explanation += (
            " FGSM accuracy rises with eps: its gradient direction stops pointing at "
            "adversarials as the step grows, the mark of gradient masking (e.g. catastrophic "
            "overfitting of single-step adversarial training)."
        )
    details = {"per_eps": per_eps, "fgsm_accuracy_rises_with_eps": fgsm_rises}
    return CheckResult(4, "single_step", verdict, explanation, n, details)


def check_monotonicity(context: CheckContext) -> CheckResult:
    """5. Robust accuracy must not rise with eps."""
    if len(context.epsilons) < 2:
        return CheckResult(5, "monotonicity", "not run", "Needs at least two eps values.")
    records = context.records
    lines = {"worst case": records.robust.mean(axis=1)}
    for a, spec in enumerate(context.suite):
        # what is left after this attack and those before it (both modes), and in independent
        # mode also this attack's own accuracy
        lines[f"after {spec.name}"] = is_robust(
            context.correct, records.broken[: a + 1].any(0)
        ).mean(1)
        if not context.cascade:
            lines[spec.name] = is_robust(context.correct, records.broken[a]).mean(axis=1)
    rises = [
        {
            "line": name,
            "eps": [context.epsilons[e], context.epsilons[e + 1]],
            "accuracy": [float(values[e]), float(values[e + 1])],
        }
        for name, values in lines.items()
        for e in range(len(values) - 1)
        if values[e + 1] > values[e]
    ]
    # examples broken at a smaller eps that no attack broke at the next larger one (the headline
    # carries them over as broken; the attacks' own misses show here)
    missed = ~records.broken[:, 1:].any(axis=0)
    inversions = int(np.sum(missed & ~records.robust[:-1] & context.correct))
    details = {"rises": rises, "examples_robust_only_at_larger_eps": inversions}
    if rises:
        first = rises[0]
        verdict = "fail"
        explanation = (
            f"Accuracy rises with eps ({first['line']}: {_percent(first['accuracy'][0])} at eps "
            f"{first['eps'][0]:g} but {_percent(first['accuracy'][1])} at {first['eps'][1]:g}; "
            f"{len(rises)} rise(s) in all). A larger ball contains the smaller one, so the "
            "attacks fail at larger eps where adversarials exist: gradient masking or step "
            "sizes that do not scale."
        )
    elif inversions:
        verdict = "warn"
        explanation = (
            f"Accuracy falls with eps, but {inversions} example(s) broken at a smaller eps "
            "survived a larger one, where the same adversarial was allowed."
        )
    else:
        verdict = "pass"
        explanation = "Robust accuracy never rises with eps, overall or per example."
    return CheckResult(5, "monotonicity", verdict, explanation, None, details)


def large_eps(norm_name: str, bounds: tuple[float, float], shape: Sequence[int]) -> float:
    """The radius at which every image can reach the same mid-range image."""
    half = (bounds[1] - bounds[0]) / 2
    return half if norm_name == "linf" else half * float(np.sqrt(np.prod(shape)))


def check_large_eps(context: CheckContext) -> CheckResult:
    """6. At a radius that lets every image become the same grey image, accuracy must drop to
    at most the largest class's share."""
    classifier = context.classifier
    untargeted = [
        a for a in _gradient_attacks(context) if not context.suite[a].top_k_targets
    ] or list(range(len(context.suite)))
    spec = context.suite[untargeted[0]]
    eps = large_eps(context.norm_name, classifier.bounds, classifier.input_shape)
    norm = make_norm(context.norm_name, eps)
    idx = context.subsample
    result = context.attack_cascade(
        [(spec, context.attacks[untargeted[0]])], norm, idx, 6, "large_eps"
    )
    accuracy = float(result.robust.mean())
    bound = float(np.bincount(context.y[idx]).max() / len(idx))
    details = {
        "eps": eps,
        "attack": spec.name,
        "accuracy": accuracy,
        "largest_class_share": bound,
        "chance": 1 / classifier.num_classes,
    }
    setting = (
        f"At {context.norm_name} eps {eps:.4g} every image can be moved to the same mid-grey "
        f"image, so at most the largest class's share ({_percent(bound)}) can stay correct"
    )
    if accuracy > bound:
        verdict = "fail"
        explanation = (
            f"{setting}, yet {spec.name} left {_percent(accuracy)} of the {len(idx)} subsample "
            "examples correct: the attack cannot find adversarials that certainly exist, so "
            "its numbers at small eps cannot be trusted (gradient masking or a broken attack)."
        )
    else:
        verdict = "pass"
        explanation = (
            f"{setting}; {spec.name} brought accuracy on the {len(idx)} subsample examples to "
            f"{_percent(accuracy)}."
        )
    return CheckResult(6, "large_eps", verdict, explanation, len(idx), details)


def check_gradient_free(context: CheckContext) -> CheckResult:
    """7. A gradient-free attack must not break examples every gradient attack missed."""
    gradient = _gradient_attacks(context)
    free = [a for a, spec in enumerate(context.suite) if spec.gradient_free]
    if not gradient or not free:
        return CheckResult(
            7,
            "gradient_free",
            "not run",
            "Needs both a gradient attack and a gradient-free one (e.g. Square) in the suite.",
        )
    broken = context.records.broken
    correct = context.correct
    counts = (broken[free].any(axis=0) & ~broken[gradient].any(axis=0) & correct).sum(axis=1)
    total = int(correct.sum())
    per_eps = [
        {"eps": eps, "examples": int(c)} for eps, c in zip(context.epsilons, counts, strict=True)
    ]
    verdict = _worst([_share_verdict(int(c), total) for c in counts])
    worst = int(np.argmax(counts))
    if verdict == "pass":
        explanation = (
            "The gradient-free attack broke no example that survived every gradient attack."
        )
    else:
        explanation = (
            f"The gradient-free attack broke {int(counts[worst])} of {total} correctly "
            f"classified examples at eps {context.epsilons[worst]:g} that every gradient attack "
            "missed. Black-box beating white-box means the gradients mislead (masking) or the "
            "gradient attacks are too weak there."
        )
    return CheckResult(7, "gradient_free", verdict, explanation, None, {"per_eps": per_eps})


def check_convergence(context: CheckContext) -> CheckResult:
    """8. Doubling steps, queries and restarts must not lower accuracy further."""
    records = context.records
    n = len(context.subsample)
    idx = context.indices(context.correct)
    robust_counts = records.robust[:, idx].sum(axis=1)
    if len(idx) == 0 or not robust_counts.any():
        return CheckResult(
            8,
            "convergence",
            "pass",
            f"None of the {n} subsample examples is robust at any eps; more budget cannot lower "
            "accuracy.",
            n,
        )
    # of the eps with robust examples left, the one where accuracy is nearest half the clean
    # level tells most; ties: the larger eps
    distance = np.where(robust_counts > 0, np.abs(robust_counts - len(idx) / 2), np.inf)
    e = int(np.flatnonzero(distance == distance.min())[-1])
    norm = make_norm(context.norm_name, context.epsilons[e])
    doubled = [
        (spec, spec.build(norm, DOUBLED_BUDGET, seed=context.seed)) for spec in context.suite
    ]
    # Step-size schedules: APGD halves its step where progress stalls, so a suite limited by
    # its step size (not by its budget) is caught too.
    adaptive = [
        (SuiteAttack(f"apgd-{loss}", APGD), APGD(norm, steps=100, loss=loss, seed=context.seed))
        for loss in ("ce", "dlr")
        if not any(spec.name == f"apgd-{loss}" for spec in context.suite)
    ]
    result = context.attack_cascade(doubled + adaptive, norm, idx, 8, "convergence")
    before = records.robust[e, idx]
    context.record_adversarials(e, idx, ~result.robust & context.correct[idx])
    extra = int(np.sum(before & ~result.robust))
    accuracy_before = float(before.sum() / n)
    accuracy_after = float(np.sum(before & result.robust) / n)
    details = {
        "eps": context.epsilons[e],
        "budget_factor": DOUBLED_BUDGET,
        "adaptive_attacks": [spec.name for spec, _ in adaptive],
        "accuracy": accuracy_before,
        "accuracy_with_doubled_budget": accuracy_after,
        "newly_broken": extra,
    }
    verdict = _share_verdict(extra, n)
    added = f" and {', '.join(spec.name for spec, _ in adaptive)}" if adaptive else ""
    setting = (
        f"With {DOUBLED_BUDGET}x the steps, queries and restarts{added} at eps "
        f"{context.epsilons[e]:g}, "
        f"accuracy on the {n}-example subsample went from {_percent(accuracy_before)} to "
        f"{_percent(accuracy_after)}"
    )
    if verdict == "pass":
        explanation = f"{setting}: the suite has converged."
    else:
        explanation = (
            f"{setting} ({extra} more examples broken): the attacks have not converged, so the "
            "reported robust accuracy overestimates. Raise steps and restarts until it stops "
            "falling."
        )
    return CheckResult(8, "convergence", verdict, explanation, n, details)


def check_label_leaking(context: CheckContext) -> CheckResult:
    """9. Adversarial accuracy must not exceed clean accuracy (label leaking)."""
    structural = int(np.sum(context.records.robust & ~context.correct))
    n = len(context.x)
    wrong = np.flatnonzero(~context.correct)
    clean_accuracy = float(np.mean(context.correct))
    untargeted = [a for a, spec in enumerate(context.suite) if not spec.top_k_targets]
    per_eps, returned_total, verdicts = [], 0, []
    for e, eps in enumerate(context.epsilons):
        fgsm_correct = context.fresh_predictions(context.fgsm(e).x_adv) == context.y
        fgsm_accuracy = float(np.mean(fgsm_correct))
        fgsm_returned = int(np.sum(fgsm_correct[wrong]))
        returned = {}
        for a in untargeted if len(wrong) else []:
            out = context.attack(context.attacks[a], wrong, 9, "label_leaking", eps)
            back = context.fresh_predictions(out.x_adv) == context.y[wrong]
            returned[context.suite[a].name] = int(
                np.sum(back & context.within_ball(out.x_adv, wrong, eps))
            )
        count = max(returned.values(), default=0)
        returned_total += count
        verdicts.append("fail" if fgsm_accuracy > clean_accuracy else _share_verdict(count, n))
        per_eps.append(
            {
                "eps": eps,
                "fgsm_accuracy": fgsm_accuracy,
                "fgsm_returned_to_true_class": fgsm_returned,
                "returned_to_true_class": returned,
            }
        )
    if structural:
        verdicts.append("fail")
    verdict = _worst(verdicts)
    details = {
        "clean_accuracy": clean_accuracy,
        "misclassified": len(wrong),
        "robust_but_misclassified": structural,
        "per_eps": per_eps,
    }
    setting = (
        f"One FGSM step with the true labels on each of the {n} examples (clean accuracy "
        f"{_percent(clean_accuracy)}) and every untargeted attack on the {len(wrong)} "
        "misclassified ones, judged by fresh forward passes"
    )
    if verdict == "pass":
        explanation = (
            f"{setting}: no attack raised accuracy above clean or returned a misclassified "
            "example to its true class."
        )
    else:
        explanation = (
            f"{setting}: attacks made examples correct ({returned_total} misclassified examples "
            "returned to their true class; FGSM accuracy "
            f"{', '.join(_percent(row['fgsm_accuracy']) for row in per_eps)}). An attack that "
            "helps the model leaks the label (Kurakin et al. 2017) or the forward pass is "
            "random; adversarial accuracy above clean accuracy is a red flag."
        )
    return CheckResult(9, "label_leaking", verdict, explanation, n, details)


CHECKS: dict[str, Callable[[CheckContext], CheckResult]] = {
    "probabilities": check_probabilities,
    "zero_gradients": check_zero_gradients,
    "nondeterminism": check_nondeterminism,
    "single_step": check_single_step,
    "monotonicity": check_monotonicity,
    "large_eps": check_large_eps,
    "gradient_free": check_gradient_free,
    "convergence": check_convergence,
    "label_leaking": check_label_leaking,
}
CHECK_NUMBERS = {name: number for number, name in enumerate(CHECKS, start=1)}


def select_checks(checks: str | Sequence[str | int] | None) -> list[str]:
    """Check names for "all", None (none) or a list of names or numbers (1-9)."""
    if checks is None:
        return []
    if isinstance(checks, str):
        checks = list(CHECKS) if checks == "all" else [checks]
    names = []
    for check in checks:
        name = list(CHECKS)[check - 1] if isinstance(check, int) and 1 <= check <= 9 else check
        if name not in CHECKS:
            raise InputError(f"Unknown check {check!r}; use 1-9 or one of {list(CHECKS)}.")
        names.append(name)
    return names


def run_checks(context: CheckContext, names: Sequence[str]) -> list[CheckResult]:
    """All nine checks in order; those not in ``names`` are reported as not run."""
    results = []
    for name, check in CHECKS.items():
        if name in names:
            results.append(check(context))
        else:
            results.append(
                CheckResult(CHECK_NUMBERS[name], name, "not run", "Not selected for this run.")
            )
    return results
