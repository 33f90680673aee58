"""``Transformed``: a Keras 3 optimizer running gradient transforms before any inner optimizer.

Modelled on ``keras.optimizers.LossScaleOptimizer``: the wrapper owns only its own state (the
step count and the noise seed), builds the inner optimizer on the same variables, delegates
learning rate and iterations to it, and serializes it inside its own config.

Keras built-ins do the rest; set them on the inner optimizer:

- decoupled weight decay: ``keras.optimizers.AdamW(weight_decay=...)`` (or ``weight_decay=`` on
  any optimizer);
- EMA of the weights: ``use_ema=True, ema_momentum=...`` (``fit`` swaps the averages in at the
  end through ``finalize_variable_values``, which the wrapper forwards);
- gradient accumulation: ``gradient_accumulation_steps=k``. The transforms then act on each
  micro-batch gradient as it arrives (so noise added per micro-batch is averaged over k).

Saved models name the classes ``robustkit>Transformed`` etc.: ``import robustkit.optimizers``
before ``keras.models.load_model``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from robustkit.errors import InputError
from robustkit.optimizers.transforms import (
    ClipByGlobalNorm,
    GaussianNoise,
    GradientTransform,
    StepContext,
    global_norm,
    zero_where,
)

# Quantities of the opt-in debug record, one keras.metrics.Mean each.
DEBUG_QUANTITIES = ("grad_norm", "clipped_grad_norm", "noise_std", "update_norm")
_INNER_CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")
_SEED_RANGE = 2**31
# Marks the summaries as TensorBoard scalars; tf.summary.write needs no TensorBoard install.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


@keras.saving.register_keras_serializable(package="robustkit")
class Transformed(keras.optimizers.Optimizer):
    """Apply gradient transforms in order, then hand the gradients to ``inner``.

    Each step: gradients are summed over replicas (under a ``tf.distribute`` strategy), run
    through ``transforms`` in the order given, and applied by ``inner`` (SGD, Adam, AdamW, ...).
    Put clipping before noise, as :func:`clipped_noisy` does, so that the noise is not clipped
    away. Noise is drawn from a stateless generator keyed by ``(seed, step)``: both live in
    optimizer variables, so a saved and reloaded model draws exactly the noise it would have.

    Under ``tf.distribute.MirroredStrategy`` every replica transforms the same all-reduced
    gradient with the same noise and hands ``1 / replicas`` of it to the inner optimizer, whose
    own all-reduce sums the shares back: replicas stay identical and the step equals the
    single-device step (one extra all-reduce per step). With XLA (``jit_compile=True``) every
    transform but :class:`CheckNumerics` compiles.

    Args:
        inner: the Keras 3 optimizer taking the step. It must not clip itself (``clipnorm``,
            ``global_clipnorm``, ``clipvalue``): that would act after the transforms and clip
            the noise away; use :func:`clip_by_norm` etc. here instead.
        transforms: :class:`GradientTransform` instances, e.g. ``[clip_by_global_norm(1.0),
            gaussian_noise(0.01)]``.
        seed: integer seed of the noise; None draws one (kept in the config and the state).
        debug: keep a per-step record of the global gradient norm before and after clipping,
            the noise std and the update norm: as ``debug_metrics`` (keras Means, see
            :class:`DebugRecordLogger`) and as ``tf.summary`` scalars under ``robustkit/``
            whenever a default summary writer is active while the step is traced.
        name: optimizer name.
    """

    def __init__(
        self,
        inner: keras.optimizers.Optimizer,
        transforms: Sequence[GradientTransform] = (),
        *,
        seed: int | None = None,
        debug: bool = False,
        name: str | None = None,
    ) -> None:
        _check_inner(inner)
        transforms = list(transforms)
        for transform in transforms:
            if not isinstance(transform, GradientTransform):
                raise InputError(
                    f"transforms must be GradientTransform instances (clip_by_norm(1.0), ...), "
                    f"got {transform!r}."
                )
        if seed is None:
            seed = secrets.randbelow(_SEED_RANGE)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"seed must be an int or None, got {seed!r}.")
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner
        self.transforms = transforms
        self.seed = seed
        self.debug = bool(debug)
        self.debug_metrics = (
            {q: keras.metrics.Mean(name=q) for q in DEBUG_QUANTITIES} if self.debug else {}
        )

    def build(self, var_list: list[Any]) -> None:
        """Create the step count, the noise seed and the inner optimizer's variables."""
        if self.built:
            return
        self.transform_step = self.add_variable(
            shape=(), dtype="int64", aggregation="only_first_replica", name="transform_step"
        )
        self.noise_seed = self.add_variable(
            shape=(),
            dtype="int64",
            initializer=keras.initializers.Constant(self.seed),
            aggregation="only_first_replica",
            name="noise_seed",
        )
        self.inner_optimizer.build(var_list)
        super().build(var_list)

    @property
    def variables(self) -> list[Any]:
        return self._variables + self.inner_optimizer.variables

    @property
    def learning_rate(self) -> Any:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self) -> Any:
        return self.inner_optimizer.iterations

    def finalize_variable_values(self, var_list: list[Any]) -> None:
        self.inner_optimizer.finalize_variable_values(var_list)

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        """Transform ``grads`` and let the inner optimizer apply them (one step)."""
        if not self.built:
            if trainable_variables is None:
                raise InputError(
                    "The optimizer is not built: pass trainable_variables on the first call "
                    "or call optimizer.build(model.trainable_variables)."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
        variables = list(
            self._trainable_variables if trainable_variables is None else trainable_variables
        )
        grads, variables = self._filter_empty_gradients(list(grads), variables)
        grads = [tf.convert_to_tensor(g) for g in grads]
        replicas = tf.distribute.get_replica_context()
        replica_count = replicas.num_replicas_in_sync if replicas is not None else 1
        if replica_count > 1:
            # The transforms see the full gradient; the inner optimizer sums the replicas' shares.
            grads = replicas.all_reduce(tf.distribute.ReduceOp.SUM, grads)

        with tf.name_scope("transforms"):
            grads, context, record = self._run_transforms(grads, variables)
        values_before = [tf.identity(v) for v in variables] if self.debug else None
        shares = grads if replica_count == 1 else [g / replica_count for g in grads]
        self.inner_optimizer.apply(shares, variables)
        self._restore_frozen(variables, context.frozen)
        if self.debug:
            change = [
                tf.identity(v) - before for v, before in zip(variables, values_before, strict=True)
            ]
            record["update_norm"] = global_norm(change)
            self._write_record(record)
        self.transform_step.assign_add(1)

    def _run_transforms(
        self, grads: list[tf.Tensor], variables: list[Any]
    ) -> tuple[list[tf.Tensor], StepContext, dict[str, tf.Tensor]]:
        step = tf.convert_to_tensor(self.transform_step)
        step_key = tf.stack([tf.convert_to_tensor(self.noise_seed), step])
        context = StepContext(
            step=step,
            key=step_key,
            noise_variance=tf.constant(0.0),
            frozen=[None] * len(variables),
        )
        record = {}
        if self.debug:
            record["grad_norm"] = record["clipped_grad_norm"] = global_norm(grads)
        for position, transform in enumerate(self.transforms):
            context.key = tf.random.experimental.stateless_fold_in(step_key, position)
            grads = transform(grads, variables, context)
            if self.debug and transform.clips:
                record["clipped_grad_norm"] = global_norm(grads)
        grads = [
            g if frozen is None else zero_where(frozen[0], g)
            for g, frozen in zip(grads, context.frozen, strict=True)
        ]
        if self.debug:
            record["noise_std"] = tf.sqrt(context.noise_variance)
        return grads, context, record

    def _restore_frozen(
        self, variables: list[Any], frozen: list[tuple[tf.Tensor, tf.Tensor] | None]
    ) -> None:
        """Put the frozen entries back to their values before the step, bit for bit."""
        for variable, entry in zip(variables, frozen, strict=True):
            if entry is None:
                continue
            mask, values_before = entry
            restored = tf.where(mask, values_before, tf.identity(variable))
            tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
            self._distribution_strategy.extended.update(
                tf_variable, lambda v, value: v.assign(value), args=(restored,), group=False
            )

    def _write_record(self, record: dict[str, tf.Tensor]) -> None:
        step = tf.cast(self.iterations, tf.int64)
        for quantity in DEBUG_QUANTITIES:
            self.debug_metrics[quantity].update_state(record[quantity])
            tf.summary.write(
                f"robustkit/{quantity}", record[quantity], step=step, metadata=_SCALAR_METADATA
            )

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner": keras.saving.serialize_keras_object(self.inner_optimizer),
            "transforms": [keras.saving.serialize_keras_object(t) for t in self.transforms],
            "seed": self.seed,
            "debug": self.debug,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Transformed:
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(config.pop("inner"), custom_objects)
        transforms = [
            keras.saving.deserialize_keras_object(t, custom_objects)
            for t in config.pop("transforms")
        ]
        return cls(inner, transforms, **config)


def _check_inner(inner: Any) -> None:
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise InputError(
            f"inner must be a Keras 3 optimizer (keras.optimizers.Adam(...), ...), got {inner!r}."
        )
    if isinstance(inner, Transformed):
        raise InputError("inner is already a Transformed optimizer; put all transforms in one.")
    clipping = {arg: getattr(inner, arg) for arg in _INNER_CLIPPING if getattr(inner, arg)}
    if clipping:
        setting = ", ".join(f"{k}={v}" for k, v in clipping.items())
        raise InputError(
            f"The inner optimizer clips its gradients ({setting}). It would clip after the "
            "transforms, i.e. after the noise, clipping the noise away and breaking the order "
            "clip -> noise. Remove it from the inner optimizer and use clip_by_norm / "
            "clip_by_global_norm / clip_by_value in the transforms instead."
        )


def clipped_noisy(
    inner: keras.optimizers.Optimizer,
    clip_norm: float | None = 1.0,
    noise: float | GradientTransform | None = None,
    *,
    seed: int | None = None,
    debug: bool = False,
) -> Transformed:
    """The common case: clip by global norm, then add noise, then step with ``inner``.

    Args:
        inner: the Keras 3 optimizer taking the step (e.g. ``keras.optimizers.AdamW(1e-3)``).
        clip_norm: global L2 norm bound of the gradients; None for no clipping.
        noise: a number (constant noise std in gradient units), a noise transform such as
            ``annealed_gaussian_noise(0.01)``, or None for no noise.
        seed: noise seed; None draws one.
        debug: keep the debug record (see :class:`Transformed`).
    """
    transforms: list[GradientTransform] = []
    if clip_norm is not None:
        transforms.append(ClipByGlobalNorm(clip_norm))
    if isinstance(noise, GradientTransform):
        transforms.append(noise)
    elif noise is not None:
        transforms.append(GaussianNoise(noise))
    return Transformed(inner, transforms, seed=seed, debug=debug)


class DebugRecordLogger(keras.callbacks.Callback):
    """Put a :class:`Transformed` optimizer's debug record into ``fit``'s logs.

    Each quantity appears as ``opt_<quantity>`` (e.g. ``opt_grad_norm``): the mean over the
    epoch's steps so far, in the progress bar, in ``History`` and in callbacks after this one.
    The optimizer is the model's, which must be a ``Transformed(..., debug=True)``.
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        if not isinstance(optimizer, Transformed) or not optimizer.debug:
            raise InputError(
                "DebugRecordLogger needs a model compiled with a "
                "robustkit.optimizers.Transformed(..., debug=True) optimizer."
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for metric in self.model.optimizer.debug_metrics.values():
            metric.reset_state()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._add_to(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._add_to(logs)

    def _add_to(self, logs: dict[str, Any] | None) -> None:
        if logs is None:
            return
        for quantity, metric in self.model.optimizer.debug_metrics.items():
            logs[f"opt_{quantity}"] = float(metric.result())
