"""Weight averaging (Gowal et al. 2020) through the Keras optimizer's own EMA (``use_ema=True``).

The optimizer keeps the averages a_t = m·a_{t-1} + (1 - m)·w_t of the trainable weights (m =
``ema_momentum``, a_1 = w_1) in its variables, updated inside each step; a checkpoint of the
optimizer holds them, so a resumed run continues them exactly. :class:`AveragedWeights` puts
them into the model for a while (validation) or for good (the end of training) through the
optimizer's ``finalize_variable_values``. Non-trainable weights (BatchNorm statistics) are not
averaged: the averaged model uses their current values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError


def averaging_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that keeps the averages: ``optimizer`` or the one a wrapper (robustkit's
    ``Transformed``, Keras' ``LossScaleOptimizer``) steps with."""
    inner = getattr(optimizer, "inner_optimizer", None)
    return optimizer if inner is None else averaging_optimizer(inner)


class AveragedWeights:
    """The optimizer's moving averages of ``model``'s trainable weights.

    Raises:
        InputError: the optimizer keeps no averages (``use_ema=False``), or overwrites the
            model with them on its own (``ema_overwrite_frequency``), which would end training
            on averaged weights mid-run.
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
        averaging = averaging_optimizer(optimizer)
        if not averaging.use_ema:
            raise InputError(
                "ema_weights=True uses the optimizer's moving average of the weights: build it "
                "with use_ema=True (e.g. keras.optimizers.Adam(1e-3, use_ema=True, "
                "ema_momentum=0.999))."
            )
        if averaging.ema_overwrite_frequency:
            raise InputError(
                "ema_weights=True puts the averages in the model itself; build the optimizer "
                "without ema_overwrite_frequency."
            )
        self.optimizer = optimizer
        self.variables = list(model.trainable_variables)

    def put_in(self) -> None:
        """Overwrite the model's trainable weights with their averages."""
        self.optimizer.finalize_variable_values(self.variables)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """While open, the model holds the averages; its own weights are put back exactly."""
        own = [tf.identity(variable.value) for variable in self.variables]
        self.put_in()
        try:
            yield
        finally:
            for variable, value in zip(self.variables, own, strict=True):
                variable.assign(value)


def averaged_or_own(averaged: AveragedWeights | None) -> contextlib.AbstractContextManager[Any]:
    """The model holding the averages while open (its own weights when ``averaged`` is None)."""
    return contextlib.nullcontext() if averaged is None else averaged.swapped_in()
