"""What each adversarial-training method attacks and minimises, per example.

A step has two phases. :func:`adversarial_examples` runs the inner maximisation with the model
in inference mode (no tape on the weights). :func:`training_terms` then computes the per-example
objective the optimizer minimises, with the model in training mode, under the caller's tape.

Methods:
    ``pgd``: Madry et al. (2018): cross-entropy at the PGD point.
    ``fast``: Wong et al. (2020): the same at an FGSM point with random start (step 1.25·eps).
    ``trades``: Zhang et al. (2019): CE(clean) + β·KL(p(clean) || p(adversarial)), the inner
        maximisation ascending that KL from a random start.
    ``mixed``: Goodfellow et al. (2015): (1 - w)·CE(clean) + w·CE(adversarial).
    ``mart``: Wang et al. (2020): BCE(p(adversarial), y) + β·KL(p(clean) || p(adversarial))·
        (1 - p_y(clean)) at the PGD point (see :func:`mart_loss`).

Options of every method: the input-gradient penalty and GradAlign's regulariser
(:mod:`~robustkit.training.fast`); of ``fast``: N-FGSM in place of FGSM-RS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import tensorflow as tf

from robustkit.attacks import FGSM, PGD
from robustkit.attacks.base import require_gradient_attack
from robustkit.errors import InputError
from robustkit.gradients import input_gradient_alignment, input_gradient_penalty
from robustkit.losses import LossFunction, cross_entropy, kl_divergence
from robustkit.models import Classifier
from robustkit.norms import Norm, make_norm
from robustkit.training.fast import NFGSM, alignment_point

METHODS = ("pgd", "fast", "trades", "mixed", "mart")


@dataclass(frozen=True)
class MethodSettings:
    """What a step attacks and minimises; see :class:`~robustkit.training.AdversarialTrainer`.

    method: one of :data:`METHODS`; beta: the KL weight of TRADES and MART; adversarial_weight:
    ``mixed``'s w; gradient_penalty: λ of λ·||∇x CE||² at the clean input; grad_align: λ of
    GradAlign's λ·(1 - cos(∇x CE(x), ∇x CE(x + δ))); n_fgsm: N-FGSM's settings (``fast`` only).
    """

    method: str = "pgd"
    beta: float = 6.0
    adversarial_weight: float = 0.5
    gradient_penalty: float = 0.0
    grad_align: float = 0.0
    n_fgsm: NFGSM | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, got {self.method!r}.")
        if not 0 <= self.adversarial_weight <= 1:
            raise InputError(
                f"adversarial_weight must be in [0, 1], got {self.adversarial_weight!r}."
            )
        if not min(self.beta, self.gradient_penalty, self.grad_align) >= 0:
            raise InputError("beta, gradient_penalty and grad_align must be >= 0.")
        if self.n_fgsm is not None and (
            self.method != "fast" or not isinstance(self.n_fgsm, NFGSM)
        ):
            raise InputError(
                "n_fgsm takes robustkit.training.NFGSM(...) settings and replaces the fast "
                f"method's FGSM-RS; it needs method='fast' (got method={self.method!r})."
            )

    @property
    def clean_gradient_pass(self) -> bool:
        """Whether the objective takes input gradients at the clean point (whose training-mode
        logits then serve as the clean logits)."""
        return self.gradient_penalty > 0 or self.grad_align > 0


class AttackedBatch(NamedTuple):
    """What the inference-mode phase hands the training-mode phase.

    x_adv: [N, H, W, C] the points the adversarial loss is taken at; inference_clean_logits:
    [N, K] or None (see :func:`needs_inference_clean_logits`); alignment_point: [N, H, W, C]
    GradAlign's random point, or None when it is off.
    """

    x_adv: tf.Tensor
    inference_clean_logits: tf.Tensor | None
    alignment_point: tf.Tensor | None


class Terms(NamedTuple):
    """Per-example results of the training-mode forward passes.

    objective: [N] what the optimizer minimises (averaged over the global batch by the caller);
    clean_logits, adv_logits: [N, K] logits used for the clean and adversarial metrics;
    penalty: [N] squared input-gradient norm ||∇x CE||² (zeros when the penalty is off);
    misalignment: [N] GradAlign's 1 - cos of the input gradients (zeros when it is off).
    """

    objective: tf.Tensor
    clean_logits: tf.Tensor
    adv_logits: tf.Tensor
    penalty: tf.Tensor
    misalignment: tf.Tensor


class InferenceView:
    """The classifier as the attack sees it: ``training`` fixed to a chosen mode.

    With ``training=True`` attack passes run layers in training mode (dropout active, BatchNorm
    using and updating batch statistics), which is what ``attack_training_mode=True`` asks for.
    """

    def __init__(self, classifier: Classifier, training: bool) -> None:
        self.classifier = classifier
        self.training = training
        self.bounds = classifier.bounds
        self.num_classes = classifier.num_classes
        self.input_shape = classifier.input_shape

    def logits(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits [N, K] in the fixed mode (the ``training`` argument is ignored)."""
        del training
        return self.classifier.logits(x, training=self.training)

    __call__ = logits


def training_attack(attack: PGD, method: str, eps: float) -> PGD:
    """The attack the training step runs: ``attack``'s settings at radius ``eps`` with the full
    step budget for every example (``early_stop=False``).

    For ``fast`` an FGSM attack is used as given; any other attack stands for its threat model
    and FGSM with random start and step 1.25·eps runs in its ball. Step sizes scale with
    ``eps / attack.norm.eps``.
    """
    norm = make_norm(attack.norm.name, eps)
    if method == "fast" and not isinstance(attack, FGSM):
        return FGSM(norm, random_start=True, **_shared_settings(attack, attack.loss))
    return _rebuilt(attack, norm, attack.step_size * eps / attack.norm.eps, attack.loss)


def with_loss(attack: PGD, loss: LossFunction) -> PGD:
    """The same attack ascending another loss."""
    return _rebuilt(attack, attack.norm, attack.step_size, loss)


def _shared_settings(attack: PGD, loss: str | LossFunction) -> dict[str, Any]:
    return {
        "loss": loss,
        "early_stop": False,
        "quantize": attack.quantize,
        "grid_steps": attack.grid_steps,
        "seed": attack.seed,
    }


def _rebuilt(attack: PGD, norm: Norm, step_size: float, loss: str | LossFunction) -> PGD:
    """A full-budget copy of ``attack`` (PGD or FGSM) with another ball, step size or loss.

    The step is kept relative to the ball's radius, so a run at another eps (an eps ramp)
    scales it, as rebuilding at that eps would."""
    shared = _shared_settings(attack, loss)
    relative = step_size / norm.eps if norm.eps > 0 else None
    steps = {"rel_step_size": relative} if relative is not None else {"step_size": step_size}
    if isinstance(attack, FGSM):
        return FGSM(norm, random_start=attack.random_start, **steps, **shared)
    return PGD(
        norm,
        steps=attack.steps,
        **steps,
        random_start=attack.random_start,
        restarts=attack.restarts,
        **shared,
    )


def check_attack(attack: Any, method: str) -> None:
    """Raise InputError when ``attack`` cannot drive ``method``."""
    MethodSettings(method)
    require_gradient_attack(attack, "The training attack")
    if not isinstance(attack, PGD):
        raise InputError(
            f"attack must be a robustkit PGD or FGSM attack (it sets the threat model and the "
            f"inner maximisation), got {type(attack).__name__}."
        )
    if not attack.norm.eps > 0:
        raise InputError(
            "The training attack needs eps > 0 (its full radius; an eps schedule may start at 0)."
        )
    if method == "trades" and not attack.random_start:
        raise InputError(
            "TRADES ascends KL(p(x) || p(x')), whose gradient is zero at x' = x: give the attack "
            "random_start=True."
        )


def needs_inference_clean_logits(settings: MethodSettings) -> bool:
    """Whether a step needs an inference-mode pass on the clean batch: TRADES' reference
    probabilities, or the clean metrics of methods whose loss has no clean training pass."""
    no_clean_pass = settings.method in ("pgd", "fast") and not settings.clean_gradient_pass
    return settings.method == "trades" or no_clean_pass


def adversarial_examples(
    settings: MethodSettings,
    attack: PGD,
    view: InferenceView,
    x: tf.Tensor,
    y: tf.Tensor,
    seed: tf.Tensor,
    *,
    eps: tf.Tensor | float | None = None,
) -> AttackedBatch:
    """The inference-mode phase of one batch: adversarial images, the clean logits when
    :func:`needs_inference_clean_logits`, GradAlign's random point when it is on.

    ``attack`` is the result of :func:`training_attack` (full budget, so no example leaves the
    batch). For ``trades`` its loss is replaced by the KL divergence from the clean prediction;
    with ``n_fgsm`` N-FGSM runs in its ball instead of the attack.
    """
    eps = attack.norm.eps if eps is None else eps
    clean_logits = None
    if needs_inference_clean_logits(settings):
        clean_logits = view.logits(x)
    point = None
    if settings.grad_align > 0:
        point = alignment_point(attack.norm, x, seed, eps)
    if settings.n_fgsm is not None:

        def attack_loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            return attack.objective(logits, labels, False)

        _, x_adv = settings.n_fgsm.examples(view, attack.norm, attack_loss, x, y, seed, eps)
        return AttackedBatch(x_adv, clean_logits, point)
    if settings.method == "trades":
        reference = tf.stop_gradient(tf.nn.softmax(clean_logits))

        # With early_stop=False the attack keeps the whole batch in order, so the per-example
        # reference probabilities line up with the logits the loss is called with.
        def kl_from_clean(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            del labels
            return kl_divergence(logits, reference)

        attack = with_loss(attack, kl_from_clean)
    x_adv = attack.run(view, x, y, seed, eps=eps).x_adv
    return AttackedBatch(tf.stop_gradient(x_adv), clean_logits, point)


def mart_loss(
    clean_logits: tf.Tensor, adv_logits: tf.Tensor, y: tf.Tensor, beta: float
) -> tf.Tensor:
    """MART's per-example objective [N] (Wang et al. 2020, eq. 9) from logits [N, K]:

    BCE = -log p_y(x') - log(1 - max_{k≠y} p_k(x')), plus
    β·KL(p(x) || p(x'))·(1 - p_y(x)), with p = softmax. The logarithms are taken stably from
    the logits (log(1 - p_j) = logsumexp_{k≠j} z_k - logsumexp z), where the authors' code
    adds 1e-4 and 1e-12 inside them. Gradients flow through every term, p(x) included.
    """
    classes = tf.shape(adv_logits)[-1]
    true = tf.one_hot(y, classes, on_value=True, off_value=False)
    lowest = tf.fill(tf.shape(adv_logits), tf.constant(-math.inf, adv_logits.dtype))
    runner_up = tf.argmax(tf.where(true, lowest, adv_logits), axis=-1, output_type=tf.int32)
    others = ~tf.one_hot(runner_up, classes, on_value=True, off_value=False)
    log_not_runner_up = tf.reduce_logsumexp(
        tf.where(others, adv_logits, lowest), axis=-1
    ) - tf.reduce_logsumexp(adv_logits, axis=-1)
    boosted_ce = cross_entropy(adv_logits, y) - log_not_runner_up
    clean_probabilities = tf.nn.softmax(clean_logits)
    true_probability = tf.reduce_sum(tf.where(true, clean_probabilities, 0.0), axis=-1)
    divergence = tf.reduce_sum(
        clean_probabilities * (tf.nn.log_softmax(clean_logits) - tf.nn.log_softmax(adv_logits)),
        axis=-1,
    )
    return boosted_ce + beta * divergence * (1.0 - true_probability)


def training_terms(
    settings: MethodSettings,
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    attacked: AttackedBatch,
) -> Terms:
    """The per-example training objective (training-mode passes; call under a weight tape).

    With ``gradient_penalty`` λ > 0 the objective gains λ·||∇x CE(x, y)||² at the clean input,
    with ``grad_align`` λ' > 0 it gains λ'·(1 - cos(∇x CE(x), ∇x CE(x + δ))) at GradAlign's
    random point (both by double backpropagation); such a clean pass's training-mode logits
    serve as the clean logits.
    """
    zeros = tf.zeros(tf.shape(y), tf.float32)
    penalty, misalignment = zeros, zeros
    clean_logits = attacked.inference_clean_logits
    if settings.gradient_penalty > 0:
        penalty, clean_logits, _ = input_gradient_penalty(
            classifier, x, y, loss="ce", training=True
        )
    if settings.grad_align > 0:
        cosine, clean = input_gradient_alignment(
            classifier, x, attacked.alignment_point, y, loss="ce", training=True
        )
        misalignment, clean_logits = 1.0 - cosine, clean.logits
    if settings.method in ("trades", "mixed", "mart") and not settings.clean_gradient_pass:
        clean_logits = classifier.logits(x, training=True)
    adv_logits = classifier.logits(attacked.x_adv, training=True)
    adversarial = cross_entropy(adv_logits, y)
    if settings.method == "trades":
        objective = cross_entropy(clean_logits, y) + settings.beta * kl_divergence(
            adv_logits, tf.nn.softmax(clean_logits)
        )
    elif settings.method == "mixed":
        weight = settings.adversarial_weight
        objective = (1.0 - weight) * cross_entropy(clean_logits, y) + weight * adversarial
    elif settings.method == "mart":
        objective = mart_loss(clean_logits, adv_logits, y, settings.beta)
    else:
        objective = adversarial
    regularisers = settings.gradient_penalty * penalty + settings.grad_align * misalignment
    return Terms(objective + regularisers, clean_logits, adv_logits, penalty, misalignment)
