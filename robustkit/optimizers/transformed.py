"""``Transformed``: a Keras 3 optimizer running gradient transforms before any inner optimizer.

Modelled on ``keras.optimizers.LossScaleOptimizer``: the wrapper owns its own state (the step
count, the noise seed and each transform's state, created from the transforms' ``init`` in
``build``), builds the inner optimizer on the same variables, delegates learning rate and
iterations to it, and serializes it inside its own config.

Keras built-ins do the rest; set them on the inner optimizer:

- decoupled weight decay: ``keras.optimizers.AdamW(weight_decay=...)`` (or ``weight_decay=`` on
  any optimizer);
- EMA of the weights: ``use_ema=True, ema_momentum=...`` (``fit`` swaps the averages in at the
  end through ``finalize_variable_values``, which the wrapper forwards);
- gradient accumulation: ``gradient_accumulation_steps=k``. The transforms then act on each
  micro-batch gradient as it arrives (so noise added per micro-batch is averaged over k, and
  stateful transforms advance once per micro-batch).

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
from robustkit.optimizers.checks import check_inner, check_transforms, check_update_output
from robustkit.optimizers.debug import DEBUG_QUANTITIES, write_record
from robustkit.optimizers.transforms import (
    ClipByGlobalNorm,
    GaussianNoise,
    GradientTransform,
    global_norm,
    zero_where,
)

_SEED_RANGE = 2**31


@keras.saving.register_keras_serializable(package="robustkit")
class Transformed(keras.optimizers.Optimizer):
    """Apply gradient transforms in order, then hand the gradients to ``inner``.

    Each step: gradients are summed over replicas (under a ``tf.distribute`` strategy), run
    through ``transforms`` in the order given, and applied by ``inner`` (SGD, Adam, AdamW, ...).
    Put clipping before noise, as :func:`clipped_noisy` does, so that the noise is not clipped
    away. Noise is drawn from a stateless generator keyed by ``(seed, step)``. The step, the
    seed and the transforms' states (the window of a running-quantile clip, the carried
    remainder of top-k sparsification) live in optimizer variables, written once per step: a
    model saved and reloaded (``model.save``, ``tf.train.Checkpoint``) continues bit for bit.

    Transforms that act on the update (:func:`freeze_small_weights`, :func:`scale_by_pattern`)
    work after the inner step, on the values it wrote; they cannot be combined with the inner
    optimizer's EMA (``use_ema``), which averages inside the step. A chain with state needs a
    gradient for every variable the optimizer was built with, at every step.

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
        check_inner(inner, Transformed)
        transforms = list(transforms)
        check_transforms(transforms, inner)
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
        self._slots = _StateSlots()

    def build(self, var_list: list[Any]) -> None:
        """Create the step count, the noise seed, the transforms' state and the inner optimizer's
        variables."""
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
        variables = list(var_list)
        with tf.init_scope():  # initial values are computed eagerly, even when built in a trace
            for position, transform in enumerate(self.transforms):
                initial = transform.init(variables)
                leaves = [tf.convert_to_tensor(leaf) for leaf in tf.nest.flatten(initial)]
                self._slots.structures.append(tf.nest.map_structure(lambda _: None, initial))
                self._slots.variables.append(
                    [
                        self.add_variable(
                            shape=leaf.shape,
                            dtype=leaf.dtype,
                            initializer=lambda shape, dtype=None, value=leaf: value,
                            aggregation="only_first_replica",
                            name=f"transform_{position}_state_{index}",
                        )
                        for index, leaf in enumerate(leaves)
                    ]
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

    def transform_states(self) -> list[Any]:
        """Each transform's current state (its structure, the variables' values); () if none."""
        return [
            tf.nest.pack_sequence_as(structure, [tf.convert_to_tensor(v) for v in slot])
            for structure, slot in zip(self._slots.structures, self._slots.variables, strict=True)
        ]

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
        self._check_variables_match_state(variables)
        grads = [tf.convert_to_tensor(g) for g in grads]
        replicas = tf.distribute.get_replica_context()
        replica_count = replicas.num_replicas_in_sync if replicas is not None else 1
        if replica_count > 1:
            # The transforms see the full gradient; the inner optimizer sums the replicas' shares.
            grads = replicas.all_reduce(tf.distribute.ReduceOp.SUM, grads)

        scales = self._update_scales(variables)  # from the values before the step
        step = tf.convert_to_tensor(self.transform_step)
        with tf.name_scope("transforms"):
            grads, states, record = self._run_transforms(grads, variables, step)
        grads = [
            g if scale is None else _zero_frozen(g, scale)
            for g, scale in zip(grads, scales, strict=True)
        ]
        before = [
            tf.identity(v) if self.debug or scale is not None else None
            for v, scale in zip(variables, scales, strict=True)
        ]
        shares = grads if replica_count == 1 else [g / replica_count for g in grads]
        self.inner_optimizer.apply(shares, variables)
        self._finish_step(variables, before, scales, states, step)
        if self.debug:
            change = [tf.identity(v) - b for v, b in zip(variables, before, strict=True)]
            record["update_norm"] = global_norm(change)
            write_record(self.debug_metrics, record, tf.cast(self.iterations, tf.int64))

    def _check_variables_match_state(self, variables: list[Any]) -> None:
        if not any(self._slots.variables):
            return
        if [self._var_key(v) for v in variables] != [
            self._var_key(v) for v in self._trainable_variables
        ]:
            stateful = [
                t for t, slot in zip(self.transforms, self._slots.variables, strict=True) if slot
            ]
            raise InputError(
                f"The stateful transforms {stateful} keep state for each of the "
                f"{len(self._trainable_variables)} variables the optimizer was built with, but "
                f"this step has gradients for {len(variables)} variables (a variable without "
                "gradient, or another list). Give every variable a gradient (zeros if need be), "
                "or build the optimizer on the variables that are trained."
            )

    def _update_scales(self, variables: list[Any]) -> list[tuple[float, Any] | None]:
        """Per variable: None, or (multiplier, frozen mask or None) of its inner update."""
        combined: list[list[Any]] = [[1.0, None] for _ in variables]
        for transform in self.transforms:
            if not transform.acts_after_step:
                continue
            for entry, scale in zip(combined, transform.update_scale(variables), strict=True):
                if scale is None:
                    continue
                entry[0] *= scale.multiplier
                if scale.frozen is not None:
                    entry[1] = (
                        scale.frozen if entry[1] is None else tf.logical_or(entry[1], scale.frozen)
                    )
        return [None if m == 1 and mask is None else (m, mask) for m, mask in combined]

    def _run_transforms(
        self, grads: list[tf.Tensor], variables: list[Any], step: tf.Tensor
    ) -> tuple[list[tf.Tensor], list[Any], dict[str, tf.Tensor]]:
        step_key = tf.stack([tf.convert_to_tensor(self.noise_seed), step])
        states = self.transform_states()
        record = {}
        if self.debug:
            record["grad_norm"] = record["clipped_grad_norm"] = global_norm(grads)
            clipping = [p for p, t in enumerate(self.transforms) if t.clips]
            last_clip = clipping[-1] if clipping else -1
        new_states = []
        for position, (transform, state) in enumerate(zip(self.transforms, states, strict=True)):
            key = tf.random.experimental.stateless_fold_in(step_key, position)
            grads, state = transform.update(list(grads), state, variables, step, key)
            check_update_output(transform, grads, variables, state, self._slots.variables[position])
            new_states.append(state)
            if self.debug and position == last_clip:
                record["clipped_grad_norm"] = global_norm(grads)
        if self.debug:
            stddevs = [t.noise_stddev(step) for t in self.transforms]
            variances = [tf.square(s) for s in stddevs if s is not None]
            record["noise_std"] = tf.sqrt(tf.add_n(variances)) if variances else tf.constant(0.0)
        return list(grads), new_states, record

    def _finish_step(
        self,
        variables: list[Any],
        before: list[tf.Tensor | None],
        scales: list[tuple[float, Any] | None],
        states: list[Any],
        step: tf.Tensor,
    ) -> None:
        """Scale or undo the inner updates, store the new states, count the step: one merge."""
        writes = []
        for variable, value_before, scale in zip(variables, before, scales, strict=True):
            if scale is None:
                continue
            multiplier, mask = scale
            if multiplier == 0:
                value = value_before
            else:
                value = tf.identity(variable)
                if multiplier != 1:
                    factor = tf.cast(multiplier, value.dtype)
                    value = value_before + factor * (value - value_before)
                if mask is not None:
                    value = tf.where(mask, value_before, value)
            writes.append((_tf_variable(variable), value))
        for slot, state in zip(self._slots.variables, states, strict=True):
            writes.extend(
                (_tf_variable(v), value)
                for v, value in zip(slot, tf.nest.flatten(state), strict=True)
            )
        writes.append((_tf_variable(self.transform_step), step + 1))
        tf.__internal__.distribute.interim.maybe_merge_call(
            _assign_all, self._distribution_strategy, writes
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


class _StateSlots:
    """Per transform, the structure of its state and the optimizer variables holding its leaves.

    A plain object, so that tracking leaves it alone: the variables are tracked (and saved) in
    the optimizer's own variable list.
    """

    def __init__(self) -> None:
        self.structures: list[Any] = []
        self.variables: list[list[Any]] = []


def _tf_variable(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable


def _assign_all(distribution: tf.distribute.Strategy, writes: list[tuple[Any, Any]]) -> None:
    for variable, value in writes:
        distribution.extended.update(variable, lambda v, x: v.assign(x), args=(value,), group=False)


def _zero_frozen(gradient: tf.Tensor, scale: tuple[float, Any]) -> tf.Tensor:
    """No gradient (so no noise) reaches the inner optimizer for frozen entries."""
    multiplier, mask = scale
    if multiplier == 0:
        return tf.zeros_like(gradient)
    return gradient if mask is None else zero_where(mask, gradient)


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
