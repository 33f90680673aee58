"""Two cures for the catastrophic overfitting of the fast method (FGSM with random start).

N-FGSM (de Jorge et al. 2022) replaces FGSM-RS's inner maximisation: larger noise and no
projection back to the eps-ball. GradAlign (Andriushchenko & Flammarion 2020) adds a
regulariser that keeps the input gradients at the clean point and at a random point of the
ball aligned; its cosine is :func:`robustkit.gradients.input_gradient_alignment`, and this
module draws the random point. The regulariser is differentiated through both input gradients
(its exact weight gradient; the authors' code detaches the clean one), and an example whose
gradient is exactly zero counts as aligned (the authors' code leaves it out of the mean).

Random draws come from :mod:`robustkit.seeding` on the step's per-example keys, each cure on a
stream of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from robustkit import seeding
from robustkit.errors import InputError
from robustkit.gradients import input_gradients
from robustkit.losses import LossFunction
from robustkit.models import Classifier
from robustkit.norms import Norm

# Sub-streams of a step's per-example keys (the attack's random starts use 0, 1, ...).
NFGSM_STREAM = 7_919
GRAD_ALIGN_STREAM = 7_927


def _stream_keys(seed: tf.Tensor, x: tf.Tensor, stream: int) -> tf.Tensor:
    """Per-example keys [N, 2] of ``stream`` under a step's int32 [2] seed (or keys [N, 2])."""
    return seeding.fold_in(seeding.as_keys(seed, tf.shape(x)[0]), stream)


@dataclass(frozen=True)
class NFGSM:
    """N-FGSM's settings (de Jorge et al. 2022, Algorithm 1).

    Attributes:
        noise: k, the noise's radius in units of eps: η is uniform in the ball of radius
            k·eps (for Linf, each pixel U[-k·eps, k·eps]); 2 in the paper.
        step: α / eps, the size of the signed gradient step in units of eps; 1 in the paper.

    N-FGSM's points leave the eps-ball, so the overfitting guard's "training attack" stays
    FGSM-RS in the ball.
    """

    noise: float = 2.0
    step: float = 1.0

    def __post_init__(self) -> None:
        for name in ("noise", "step"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise InputError(f"NFGSM {name} must be a finite number >= 0, got {value!r}.")

    def examples(
        self,
        classifier: Classifier,
        norm: Norm,
        loss: LossFunction,
        x: tf.Tensor,
        y: tf.Tensor,
        seed: tf.Tensor,
        eps: tf.Tensor | float,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(x_noisy, x_adv), both [N, H, W, C], for clean images x in bounds at radius eps:

        x_noisy = clip(x + η), η uniform in ``norm``'s ball of radius k·eps;
        x_adv = clip(x_noisy + α·d), α = step·eps, d = ``norm.step_direction(∇x loss(x_noisy))``
        (sign for Linf). clip is to the classifier's bounds only: neither the noise nor the
        final point is projected to the eps-ball (the authors' code, ``clip=0``). ``seed`` is
        the step's int32 [2] seed or per-example keys [N, 2]; x_adv carries no gradient.
        """
        low, high = classifier.bounds
        keys = _stream_keys(seed, x, NFGSM_STREAM)
        noise = norm.random_start(tf.shape(x), keys, self.noise * eps)
        x_noisy = tf.clip_by_value(x + noise, low, high)
        gradient = input_gradients(classifier, x_noisy, y, loss=loss).gradient
        moved = x_noisy + self.step * eps * norm.step_direction(gradient)
        return x_noisy, tf.stop_gradient(tf.clip_by_value(moved, low, high))


def alignment_point(norm: Norm, x: tf.Tensor, seed: tf.Tensor, eps: tf.Tensor | float) -> tf.Tensor:
    """GradAlign's random point x + δ [N, H, W, C], δ uniform in ``norm``'s ball of radius eps
    (for Linf U[-eps, eps] per pixel), not clipped to the bounds (as in the authors' code)."""
    return x + norm.random_start(tf.shape(x), _stream_keys(seed, x, GRAD_ALIGN_STREAM), eps)
