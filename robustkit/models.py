"""`Classifier`: a Keras model or callable seen in pixel space, always returning logits.

Images enter as float32 NHWC tensors inside ``bounds`` (default ``[0, 1]``). Whatever the model
expects beyond that (×255, mean/std) is applied in-graph by :class:`Preprocessing`, so gradients
flow through it. A softmax head is unwrapped to its pre-softmax output without cloning the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from robustkit.errors import InputError, RobustkitWarning
from robustkit.model_files import load_keras_model
from robustkit.model_heads import logits_view
from robustkit.tracing import compile_with_signature

logger = logging.getLogger(__name__)

OUTPUT_KINDS = ("auto", "logits", "probabilities")
PROBABILITY_FLOOR = 1e-30  # keeps log(probabilities) finite


@dataclass(frozen=True)
class Preprocessing:
    """In-graph map from pixel space to the model's input: ``((x * scale + offset) - mean) / std``.

    ``mean`` and ``std`` are scalars or per-channel sequences in the scaled units.
    """

    scale: float = 1.0
    offset: float = 0.0
    mean: float | Sequence[float] | None = None
    std: float | Sequence[float] | None = None

    def __post_init__(self) -> None:
        if self.std is not None and np.any(np.asarray(self.std, dtype=np.float64) <= 0):
            raise InputError(f"Preprocessing std must be positive, got {self.std!r}.")
        if self.scale == 0:
            raise InputError("Preprocessing scale must be non-zero.")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Map a pixel-space batch [N, H, W, C] to model-input units."""
        x = x * self.scale + self.offset
        if self.mean is not None:
            x = x - tf.constant(self.mean, dtype=x.dtype)
        if self.std is not None:
            x = x / tf.constant(self.std, dtype=x.dtype)
        return x

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description."""
        as_list = lambda v: None if v is None else np.asarray(v, dtype=float).tolist()  # noqa: E731
        return {
            "scale": self.scale,
            "offset": self.offset,
            "mean": as_list(self.mean),
            "std": as_list(self.std),
        }


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every row is non-negative and sums to 1 (a softmax output, not logits)."""
    return bool(
        outputs.shape[-1] > 1
        and np.all(outputs >= 0)
        and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-4)
    )


def _require_one_image_input_and_output(model: Any) -> None:
    """InputError, naming the fix, for models robustkit cannot attack as they are: several
    inputs or outputs, or a first layer that reads channels-first images."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) > 1:
        raise InputError(
            f"The model has {len(inputs)} inputs; robustkit needs one image input. Wrap it in a "
            "model of the image alone, e.g. keras.Model(image, model([image, fixed_other]))."
        )
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) > 1:
        raise InputError(
            f"The model has {len(outputs)} outputs; robustkit attacks one classifier head. Pass "
            "keras.Model(model.inputs, model.outputs[i]) for the head you want."
        )
    layers = [
        layer
        for layer in getattr(model, "layers", None) or []
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    first = layers[0] if layers else None
    if getattr(first, "data_format", None) == "channels_first":
        raise InputError(
            "The model reads channels-first images [channels, height, width]; robustkit works "
            "in NHWC. Put keras.layers.Permute((3, 1, 2)) in front of it: keras.Sequential("
            "[keras.Input((height, width, channels)), keras.layers.Permute((3, 1, 2)), model])."
        )


class Classifier:
    """A classifier in pixel space that always returns logits.

    Args:
        model: a Keras 3 model (Sequential, functional or subclassed) or a callable mapping a
            batch [N, H, W, C] in model-input units to [N, K] outputs.
        bounds: (low, high) of valid pixels, the scale of ``eps`` and step sizes.
        preprocessing: in-graph map from pixel space to the model's input units.
        input_shape: (H, W, C); read from the model when omitted.
        num_classes: K; read from the model (or a probe) when omitted.
        output: ``"auto"`` detects softmax heads; ``"logits"`` trusts the output;
            ``"probabilities"`` declares a probability output whose logits cannot be recovered
            (log-probabilities are used, with a warning: they saturate and can mask gradients).
            Kept as the attribute ``output``.

    Attributes:
        logits_source: where the logits come from, in words.
        uses_log_probabilities: True when the logits are log(probabilities) because the
            model's logits could not be recovered (attacks on them may be masked).
    """

    def __init__(
        self,
        model: Any,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        preprocessing: Preprocessing | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        output: str = "auto",
    ) -> None:
        if not callable(model):
            raise InputError(f"model must be a Keras model or a callable, got {type(model)!r}.")
        low, high = (float(b) for b in bounds)
        if not low < high:
            raise InputError(f"bounds must satisfy low < high, got {bounds!r}.")
        if output not in OUTPUT_KINDS:
            raise InputError(f"output must be one of {OUTPUT_KINDS}, got {output!r}.")
        self.model = model
        self.output = output
        self.bounds = (low, high)
        self.preprocessing = preprocessing or Preprocessing()
        self.input_shape = self._resolve_input_shape(model, input_shape)
        self._check_channels(self.preprocessing, self.input_shape[-1])
        self.uses_log_probabilities = output == "probabilities"
        missing = None  # why no pre-softmax output was found
        if self.uses_log_probabilities:
            self._raw_logits, self.logits_source = self._log_probabilities(
                model, "output='probabilities' was declared"
            )
        elif output == "logits":
            self._raw_logits = lambda x, training=False: model(x, training=training)
            self.logits_source = "model output (declared logits)"
        else:
            self._raw_logits, self.logits_source, missing = logits_view(model)
        probe = self._probe_outputs()
        if output == "auto" and looks_like_probabilities(probe):
            why = missing or "its pre-softmax output already sums to 1 on every row"
            self._raw_logits, self.logits_source = self._log_probabilities(model, why)
            self.uses_log_probabilities = True
        self.num_classes = num_classes or int(probe.shape[-1])
        logger.debug("Classifier logits from %s", self.logits_source)

    @staticmethod
    def _resolve_input_shape(model: Any, given: Sequence[int] | None) -> tuple[int, int, int]:
        _require_one_image_input_and_output(model)
        shape = given
        if shape is None:
            model_shape = getattr(model, "input_shape", None)
            shape = None if model_shape is None else tuple(model_shape[1:])
        if shape is not None and len(shape) != 3:
            raise InputError(
                f"The model takes inputs of shape {tuple(shape)}; robustkit works on images "
                "[height, width, channels]. For grayscale images without a channel axis, put "
                "keras.layers.Reshape((height, width)) in front of the model; non-image inputs "
                "(tables, text, sequences) are not supported."
            )
        if shape is None or any(d is None for d in shape):
            raise InputError(
                f"Cannot tell the model's image shape (got {shape!r}); pass "
                "input_shape=(height, width, channels) to Classifier (CLI: --input-size HxW)."
            )
        return tuple(int(d) for d in shape)  # type: ignore[return-value]

    @staticmethod
    def _check_channels(preprocessing: Preprocessing, channels: int) -> None:
        for name in ("mean", "std"):
            value = getattr(preprocessing, name)
            size = np.asarray(value).size if value is not None else 1
            if size not in (1, channels):
                raise InputError(
                    f"Preprocessing {name} has {size} values but the model's images have "
                    f"{channels} channel(s); give one value or one per channel."
                )

    @staticmethod
    def _log_probabilities(model: Any, why: str) -> tuple[Callable[..., tf.Tensor], str]:
        """log(probabilities) as logits, with a warning that says ``why`` the logits could not
        be recovered."""
        warnings.warn(
            f"The model outputs probabilities and its logits cannot be recovered: {why}. "
            "robustkit uses log(probabilities), which saturate and can mask gradients, so "
            "attacks may overestimate robustness. Pass a model whose last layer outputs logits "
            "if you can.",
            RobustkitWarning,
            stacklevel=3,
        )

        def log_probabilities(x: tf.Tensor, training: bool = False) -> tf.Tensor:
            probabilities = model(x, training=training)
            return tf.math.log(tf.maximum(probabilities, PROBABILITY_FLOOR))

        return log_probabilities, "log of probability output (logits not recoverable)"

    def _probe_outputs(self) -> np.ndarray:
        """Outputs [2, K] on two constant images (low bound and mid-range)."""
        low, high = self.bounds
        probe = tf.stack(
            [tf.fill(self.input_shape, low), tf.fill(self.input_shape, (low + high) / 2)]
        )
        outputs = self.logits(probe)
        if outputs.shape.rank != 2:
            raise InputError(
                f"The model must output [batch, classes]; it gave shape {tuple(outputs.shape)}."
            )
        return outputs.numpy()

    def with_model(self, model: Any) -> Classifier:
        """A Classifier around another model (e.g. a copy) with this one's bounds,
        preprocessing, input shape, class count and output kind."""
        return Classifier(
            model,
            bounds=self.bounds,
            preprocessing=self.preprocessing,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            output="probabilities" if self.uses_log_probabilities else self.output,
        )

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        """The wrapped model's trainable variables (empty for a plain callable)."""
        return list(getattr(self.model, "trainable_variables", []))

    def logits(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Logits [N, K] for a pixel-space batch x [N, H, W, C]; differentiable w.r.t. x."""
        return self._raw_logits(self.preprocessing(tf.cast(x, tf.float32)), training=training)

    __call__ = logits

    def predict_logits(self, x: np.ndarray | tf.Tensor, batch_size: int = 256) -> np.ndarray:
        """Logits [N, K] for a pixel-space batch, computed in compiled batches."""
        x = self.validate_images(x)
        if not hasattr(self, "_compiled_logits"):
            signature = [tf.TensorSpec((None, *self.input_shape), tf.float32)]
            self._compiled_logits = compile_with_signature(self.logits, signature)
        chunks = [
            self._compiled_logits(x[i : i + batch_size]).numpy()
            for i in range(0, int(x.shape[0]), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes), np.float32)

    def validate_images(self, x: Any, name: str = "x") -> tf.Tensor:
        """Check a pixel-space batch and return it as a float32 tensor [N, H, W, C].

        Raises InputError on the wrong rank, shape or dtype, non-finite values or values outside
        ``bounds``.
        """
        dtype = getattr(x, "dtype", None)
        if dtype is None or not (
            np.issubdtype(np.dtype(getattr(dtype, "as_numpy_dtype", dtype)), np.floating)
        ):
            raise InputError(
                f"{name} must be a float array in bounds {self.bounds}, got dtype {dtype}. "
                "Convert 8-bit images with x.astype('float32') / 255."
            )
        x = tf.convert_to_tensor(x, dtype=tf.float32)
        if tuple(x.shape[1:]) != self.input_shape or x.shape.rank != 4:
            raise InputError(
                f"{name} must have shape [N, {', '.join(map(str, self.input_shape))}] (NHWC), "
                f"got {tuple(x.shape)}."
            )
        low, high = self.bounds
        values = x.numpy() if tf.executing_eagerly() else None
        if values is not None and values.size:
            smallest, largest = values.min(), values.max()  # a NaN or an Inf shows in these
            if not (np.isfinite(smallest) and np.isfinite(largest)):
                raise InputError(f"{name} contains NaN or Inf values.")
            if smallest < low or largest > high:
                raise InputError(
                    f"{name} has values in [{smallest:g}, {largest:g}], outside the "
                    f"classifier bounds [{low:g}, {high:g}]. Rescale the images, or set "
                    "bounds= and preprocessing= on the Classifier."
                )
        return x

    def validate_labels(self, y: Any, n: int, name: str = "y") -> tf.Tensor:
        """Check class indices [n] and return them as an int32 tensor."""
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise InputError(f"{name} must be a vector of {n} class indices, got {labels.shape}.")
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{name} must hold integer class indices, got dtype {labels.dtype}.")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise InputError(
                f"{name} holds classes in [{labels.min()}, {labels.max()}] but the model has "
                f"{self.num_classes} classes (0..{self.num_classes - 1})."
            )
        return tf.convert_to_tensor(labels, dtype=tf.int32)


def check_classifier(classifier: Any) -> Classifier:
    """``classifier`` if it is a :class:`Classifier`, else InputError."""
    if not isinstance(classifier, Classifier):
        raise InputError("Pass a robustkit Classifier: wrap your model as Classifier(model).")
    return classifier


def load_classifier(
    path: str | os.PathLike[str],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
    **classifier_options: Any,
) -> Classifier:
    """Load a ``.keras`` or ``.h5`` model file (:func:`load_keras_model`) as a
    :class:`Classifier`; ``classifier_options`` go to :class:`Classifier` (bounds,
    preprocessing, output, input_shape, ...)."""
    model = load_keras_model(path, safe_mode=safe_mode, custom_objects=custom_objects)
    return Classifier(model, **classifier_options)


def weights_digest(classifier: Classifier) -> str:
    """SHA-256 (hex) of the model's weights, shapes included: how a journal or a checkpoint
    recognises the same model when a run resumes. A callable without ``weights`` digests to
    the empty hash."""
    digest = hashlib.sha256()
    for weight in getattr(classifier.model, "weights", ()):
        values = np.asarray(weight)
        digest.update(str(values.shape).encode())
        digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()
