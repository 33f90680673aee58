"""DP-SGD (Abadi et al. 2016): per-example clipping and Gaussian noise as a training-step helper.

Per-example clipping cannot live inside a Keras optimizer (``apply`` only sees the batch-mean
gradient), so :class:`DPSGDStep` computes per-example gradients itself, vectorized over the batch
with ``tf.vectorized_map`` (tapes on the weights only), clips each to ``l2_norm_clip``, sums,
adds N(0, (noise_multiplier · l2_norm_clip)²) per coordinate, divides by the batch size and
hands the result to any Keras optimizer. With the optional ``dp-accounting`` package
(``pip install 'robustkit[dp]'``), :func:`dp_sgd_privacy` reports the (ε, δ) spent.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import secrets
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError, RobustkitError
from robustkit.optimizers.transforms import gaussian_like

ACCOUNTANTS = ("rdp", "pld")

LossFunction = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def per_example_gradients(
    model: Callable[..., tf.Tensor],
    loss_fn: LossFunction,
    x: tf.Tensor,
    y: tf.Tensor,
    variables: list[Any],
    training: bool = True,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """Each example's loss and its gradient with respect to ``variables``, vectorized.

    Args:
        model: a Keras model (or callable) mapping a batch of inputs to predictions.
        loss_fn: ``loss_fn(y_true, y_pred)`` on a batch of one example, e.g.
            ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``; its result is summed.
        x: inputs [B, ...]; y: targets [B, ...].
        variables: the weights to differentiate (usually ``model.trainable_variables``).
        training: passed to the model call. Examples are vectorized, not looped: BatchNorm in
            training mode normalises each example by itself, and Dropout draws one mask shared
            by the whole batch. TensorFlow vectorizes Conv2D filter gradients as a parallel
            while-loop (it logs "Conv2DBackpropFilter uses a while_loop"), so convolutions cost
            more per example than dense layers.

    Returns:
        losses float32 [B] and, per variable, gradients [B, *variable.shape].
    """

    def one_example(example: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        x_one, y_one = example
        with tf.GradientTape() as tape:
            prediction = model(x_one[tf.newaxis], training=training)
            loss = tf.reduce_sum(loss_fn(y_one[tf.newaxis], prediction))
        return loss, tape.gradient(loss, variables)

    return tf.vectorized_map(one_example, (x, y), fallback_to_while_loop=False)


def clip_per_example(gradients: list[tf.Tensor], l2_norm_clip: float) -> list[tf.Tensor]:
    """Scale each example's gradient (all variables together) to L2 norm at most ``l2_norm_clip``.

    Args:
        gradients: per variable, per-example gradients [B, *variable.shape].
        l2_norm_clip: the bound C (gradient units).

    Returns:
        the same structure, example i multiplied by ``C / max(||g_i||, C)``.
    """
    squares = [tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), 1) for g in gradients]
    norms = tf.sqrt(tf.add_n(squares))
    scale = l2_norm_clip / tf.maximum(norms, l2_norm_clip)
    return [g * tf.reshape(scale, [-1] + [1] * (g.shape.rank - 1)) for g in gradients]


class DPSGDStep:
    """A compiled DP-SGD training step for a Keras model and any Keras optimizer.

    ``step(x, y)`` computes per-example gradients, clips each to ``l2_norm_clip``, sums them,
    adds Gaussian noise of std ``noise_multiplier · l2_norm_clip``, divides by the batch size,
    applies the result with ``optimizer`` and returns the mean loss. Noise comes from a
    stateless generator keyed by ``(seed, steps)``: the same seed gives the same bytes. Whoever
    knows the seed can subtract the noise, so the privacy guarantee holds only for a secret
    seed: leave ``seed=None`` (drawn from ``secrets``) outside tests.

    Args:
        model: a built Keras model; see :func:`per_example_gradients` for layers to avoid.
        loss_fn: per-example loss ``loss_fn(y_true, y_pred)`` evaluated on one example.
        optimizer: any Keras optimizer; it is built on the model's trainable variables.
        l2_norm_clip: per-example gradient bound C (> 0).
        noise_multiplier: σ, the noise std in units of C (>= 0).
        seed: integer noise seed; None draws a secret one.
        training: passed to the model call.
    """

    def __init__(
        self,
        model: keras.Model,
        loss_fn: LossFunction,
        optimizer: keras.optimizers.Optimizer,
        *,
        l2_norm_clip: float,
        noise_multiplier: float,
        seed: int | None = None,
        training: bool = True,
    ) -> None:
        if not (math.isfinite(l2_norm_clip) and l2_norm_clip > 0):
            raise InputError(f"l2_norm_clip must be a finite number > 0, got {l2_norm_clip!r}.")
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise InputError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}.")
        if not getattr(model, "built", False) or not model.trainable_variables:
            raise InputError(
                "The model must be built and have trainable weights: give it a keras.Input or "
                "call it on a batch once before making the DP-SGD step."
            )
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.training = bool(training)
        self.variables = list(model.trainable_variables)
        if seed is None:
            seed = secrets.randbelow(2**63)
        self.seed = tf.constant(int(seed), tf.int64)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="dp_sgd_steps")
        optimizer.build(self.variables)
        self._privatized_gradients = tf.function(self._privatize, reduce_retracing=True)
        self._train_step = tf.function(self._step, reduce_retracing=True)

    def privatized_gradients(self, x: Any, y: Any) -> tuple[list[tf.Tensor], tf.Tensor]:
        """The noisy mean clipped gradient (one per variable) and the per-example losses [B].

        Uses the noise of the current step and does not advance it.
        """
        return self._privatized_gradients(tf.convert_to_tensor(x), tf.convert_to_tensor(y))

    def __call__(self, x: Any, y: Any) -> tf.Tensor:
        """One training step on the batch; returns its mean loss (float32 scalar)."""
        return self._train_step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))

    def _privatize(self, x: tf.Tensor, y: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        losses, gradients = per_example_gradients(
            self.model, self.loss_fn, x, y, self.variables, self.training
        )
        clipped = clip_per_example(gradients, self.l2_norm_clip)
        sums = [tf.reduce_sum(g, axis=0) for g in clipped]
        key = tf.stack([self.seed, self.steps.read_value()])
        noise = gaussian_like(sums, key, tf.constant(self.noise_multiplier * self.l2_norm_clip))
        batch_size = tf.cast(tf.shape(x)[0], tf.float32)
        noisy = [(total + n) / batch_size for total, n in zip(sums, noise, strict=True)]
        return noisy, losses

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        gradients, losses = self._privatize(x, y)
        self.optimizer.apply(gradients, self.variables)
        self.steps.assign_add(1)
        return tf.reduce_mean(losses)

    def privacy_spent(
        self, *, num_examples: int, batch_size: int, delta: float, accountant: str = "rdp"
    ) -> PrivacySpent:
        """(ε, δ) of the steps taken so far; see :func:`dp_sgd_privacy` for the assumptions."""
        return dp_sgd_privacy(
            noise_multiplier=self.noise_multiplier,
            sample_rate=batch_size / num_examples,
            steps=int(self.steps.numpy()),
            delta=delta,
            accountant=accountant,
        )


@dataclasses.dataclass(frozen=True)
class PrivacySpent:
    """The (ε, δ)-DP guarantee of a DP-SGD run and how it was computed."""

    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    sample_rate: float
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def dp_sgd_privacy(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> PrivacySpent:
    """ε of ``steps`` DP-SGD steps at the given δ, from the ``dp-accounting`` package.

    Models each step as a Poisson-subsampled Gaussian mechanism (each example taken with
    probability ``sample_rate`` = batch size / dataset size, add-or-remove-one neighbours), the
    standard DP-SGD analysis; shuffled fixed-size batches are the usual approximation of it.

    Args:
        noise_multiplier: σ (noise std / l2_norm_clip).
        sample_rate: q in (0, 1].
        steps: number of steps taken (>= 0).
        delta: target δ in (0, 1), typically below 1 / dataset size.
        accountant: "rdp" (Rényi DP, Mironov 2017) or "pld" (privacy loss distributions; tighter,
            slower).

    Raises:
        RobustkitError: ``dp-accounting`` is not installed.
    """
    if accountant not in ACCOUNTANTS:
        raise InputError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}.")
    if not 0 < sample_rate <= 1:
        raise InputError(f"sample_rate must be in (0, 1], got {sample_rate!r}.")
    sample_rate = float(sample_rate)
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta!r}.")
    if not (isinstance(steps, int) and steps >= 0):
        raise InputError(f"steps must be an int >= 0, got {steps!r}.")
    if not noise_multiplier >= 0:
        raise InputError(f"noise_multiplier must be >= 0, got {noise_multiplier!r}.")
    try:
        dp_accounting = importlib.import_module("dp_accounting")
    except ImportError as error:
        raise RobustkitError(
            "Privacy accounting needs the dp-accounting package: pip install 'robustkit[dp]'."
        ) from error
    if steps == 0:  # no data touched yet
        return PrivacySpent(0.0, float(delta), accountant, float(noise_multiplier), sample_rate, 0)
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )
    if accountant == "rdp":
        ledger = dp_accounting.rdp.RdpAccountant()
    else:
        ledger = dp_accounting.pld.PLDAccountant()
    ledger.compose(event)
    return PrivacySpent(
        epsilon=float(ledger.get_epsilon(delta)),
        delta=float(delta),
        accountant=accountant,
        noise_multiplier=float(noise_multiplier),
        sample_rate=sample_rate,
        steps=steps,
    )
