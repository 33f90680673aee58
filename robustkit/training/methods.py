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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

from robustkit.attacks import FGSM, PGD
from robustkit.attacks.base import require_gradient_attack
from robustkit.errors import InputError
from robustkit.gradients import input_gradient_penalty
from robustkit.losses import LossFunction, cross_entropy, kl_divergence
from robustkit.models import Classifier
from robustkit.norms import Norm, make_norm

METHODS = ("pgd", "fast", "trades", "mixed")


class Terms(NamedTuple):
    """Per-example results of the training-mode forward passes.

    objective: [N] what the optimizer minimises (averaged over the global batch by the caller);
    clean_logits, adv_logits: [N, K] logits used for the clean and adversarial metrics;
    penalty: [N] squared input-gradient norm ||∇x CE||² (zeros when the penalty is off).
    """

    objective: tf.Tensor
    clean_logits: tf.Tensor
    adv_logits: tf.Tensor
    penalty: tf.Tensor


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
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}, got {method!r}.")
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


def needs_inference_clean_logits(method: str, gradient_penalty: float) -> bool:
    """Whether a step needs an inference-mode pass on the clean batch: TRADES' reference
    probabilities, or the clean metrics of methods whose loss has no clean training pass."""
    return method == "trades" or (method in ("pgd", "fast") and gradient_penalty <= 0)


def adversarial_examples(
    method: str,
    attack: PGD,
    view: InferenceView,
    x: tf.Tensor,
    y: tf.Tensor,
    seed: tf.Tensor,
    *,
    eps: tf.Tensor | float | None = None,
    gradient_penalty: float,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Adversarial images [N, H, W, C] for one batch, with inference-mode clean logits [N, K]
    when :func:`needs_inference_clean_logits` (else None).

    ``attack`` is the result of :func:`training_attack` (full budget, so no example leaves the
    batch). For ``trades`` its loss is replaced by the KL divergence from the clean prediction.
    """
    clean_logits = None
    if needs_inference_clean_logits(method, gradient_penalty):
        clean_logits = view.logits(x)
    if method == "trades":
        reference = tf.stop_gradient(tf.nn.softmax(clean_logits))

        # With early_stop=False the attack keeps the whole batch in order, so the per-example
        # reference probabilities line up with the logits the loss is called with.
        def kl_from_clean(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            del labels
            return kl_divergence(logits, reference)

        attack = with_loss(attack, kl_from_clean)
    x_adv = attack.run(view, x, y, seed, eps=eps).x_adv
    return tf.stop_gradient(x_adv), clean_logits


def training_terms(
    method: str,
    classifier: Classifier,
    x: tf.Tensor,
    y: tf.Tensor,
    x_adv: tf.Tensor,
    inference_clean_logits: tf.Tensor | None,
    *,
    beta: float,
    adversarial_weight: float,
    gradient_penalty: float,
) -> Terms:
    """The per-example training objective (training-mode passes; call under a weight tape).

    With ``gradient_penalty`` λ > 0 the objective gains λ·||∇x CE(x, y)||² at the clean input
    (double backpropagation), and that pass's training-mode logits serve as the clean logits.
    """
    penalty = tf.zeros(tf.shape(y), tf.float32)
    clean_logits = inference_clean_logits
    if gradient_penalty > 0:
        penalty, clean_logits, _ = input_gradient_penalty(
            classifier, x, y, loss="ce", training=True
        )
    elif method in ("trades", "mixed"):
        clean_logits = classifier.logits(x, training=True)
    adv_logits = classifier.logits(x_adv, training=True)
    adversarial = cross_entropy(adv_logits, y)
    if method == "trades":
        objective = cross_entropy(clean_logits, y) + beta * kl_divergence(
            adv_logits, tf.nn.softmax(clean_logits)
        )
    elif method == "mixed":
        objective = (1.0 - adversarial_weight) * cross_entropy(
            clean_logits, y
        ) + adversarial_weight * adversarial
    else:
        objective = adversarial
    return Terms(objective + gradient_penalty * penalty, clean_logits, adv_logits, penalty)
