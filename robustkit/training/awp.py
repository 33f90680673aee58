"""Adversarial weight perturbation (AWP, Wu et al. 2020) inside the compiled training step.

One ascent step on the training objective gives each kernel a perturbation of relative size
gamma: v_l = gamma·||w_l||·g_l / (||g_l|| + 1e-20), with g_l the objective's gradient w.r.t. the
weights w_l (Frobenius norms per variable; variables of rank <= 1, biases and normalisation
parameters, stay unperturbed, as in the authors' code). The objective's gradient is then taken
at w + v and the optimizer applies it to w.

The weights are never written: both passes run in a ``keras.StatelessScope``, the second with
w + v in place of w, so nothing is left to undo after the step. The ascent pass's state updates
(BatchNorm statistics, dropout seeds) are discarded, as the authors' proxy model discards them;
those of the pass at w + v are written back, as a step without AWP writes them, so a radius of
0 gives the weights of a step without AWP bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError

_TINY = 1e-20  # the authors' guard of a zero gradient norm

Objective = Callable[[], tuple[Any, tf.Tensor]]  # () -> (per-example terms, scalar loss)


def check_radius(radius: float | None) -> float | None:
    """The AWP radius gamma as a float (None: AWP off); InputError unless finite and >= 0."""
    if radius is None:
        return None
    if isinstance(radius, bool) or not (math.isfinite(float(radius)) and float(radius) >= 0):
        raise InputError(f"awp must be a relative radius >= 0 (e.g. 5e-3) or None, got {radius!r}.")
    return float(radius)


def is_perturbed(variable: Any) -> bool:
    """Whether AWP perturbs this variable: kernels (rank >= 2), not biases or scales."""
    return len(variable.shape) >= 2


def weight_perturbation(
    gradients: Sequence[tf.Tensor], variables: Sequence[Any], radius: float
) -> list[tf.Tensor | None]:
    """v_l = radius·||w_l||·g_l / (||g_l|| + 1e-20) per perturbed variable, None for the rest."""
    perturbation: list[tf.Tensor | None] = []
    for gradient, variable in zip(gradients, variables, strict=True):
        if not is_perturbed(variable):
            perturbation.append(None)
            continue
        scale = radius * tf.norm(variable.value) / (tf.norm(gradient) + _TINY)
        perturbation.append(tf.stop_gradient(scale * gradient))
    return perturbation


class WeightPerturbation:
    """AWP of radius ``radius`` for a Keras model's trainable variables.

    Build it, like the step, inside the strategy scope the step runs under.
    """

    def __init__(self, model: keras.Model, radius: float) -> None:
        self.radius = radius
        self.variables = list(model.trainable_variables)
        self.state = list(model.non_trainable_variables)

    def gradients(
        self, objective: Objective, context: tf.distribute.ReplicaContext
    ) -> tuple[Any, tf.Tensor, list[tf.Tensor]]:
        """(terms, loss, gradient w.r.t. the variables) of ``objective`` at w + v.

        ``objective`` runs the training-mode passes and returns the per-example terms and this
        replica's share of the global mean loss. Under several replicas the ascent gradient is
        summed over them first, so every replica perturbs alike.
        """
        zero = tf.UnconnectedGradients.ZERO
        with keras.StatelessScope(), tf.GradientTape() as tape:
            _, ascent_loss = objective()
        ascent = tape.gradient(ascent_loss, self.variables, unconnected_gradients=zero)
        if context.num_replicas_in_sync > 1:
            ascent = context.all_reduce(tf.distribute.ReduceOp.SUM, ascent)
        perturbation = weight_perturbation(ascent, self.variables, self.radius)
        with tf.GradientTape() as tape:
            perturbed = [
                (variable, variable.value + shift)
                for variable, shift in zip(self.variables, perturbation, strict=True)
                if shift is not None
            ]
            with keras.StatelessScope(perturbed) as scope:
                terms, loss = objective()
        gradients = tape.gradient(loss, self.variables, unconnected_gradients=zero)
        for variable in self.state:
            updated = scope.get_current_value(variable)
            if updated is not None:
                variable.assign(updated)
        return terms, loss, gradients
