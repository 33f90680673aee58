"""The shared machinery of every attribution method: targets, objectives, chunked loops, caching.

All per-point work (steps × samples × images) runs in :func:`over_chunks`, mostly through
:func:`sum_over_points`: one ``tf.while_loop`` over chunks of ``chunk_size`` points, so memory is
bounded by the chunk size and not by the number of steps or samples. A point's result depends
only on which image and which step or sample it is, not on how the points are grouped into
chunks (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from robustkit.errors import InputError, positive_int
from robustkit.losses import LossFunction, class_logit
from robustkit.models import Classifier, check_classifier
from robustkit.saliency.attribution import Attribution

PREDICTED = -1  # target code: explain the class the model predicts
DEFAULT_INTERNAL_BATCH_SIZE = 64
SCALAR_INT = tf.TensorSpec((), tf.int32)
SCALAR_FLOAT = tf.TensorSpec((), tf.float32)
SEED_SPECS = [tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int64)]  # seed, first_index


def target_probability(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Softmax probability of class y [N]."""
    return class_logit(tf.nn.softmax(logits), y)


def target_log_probability(logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Log-softmax of class y [N] (nats), computed stably from logits."""
    return class_logit(tf.nn.log_softmax(logits), y)


OBJECTIVES: dict[str, LossFunction] = {
    "logit": class_logit,
    "probability": target_probability,
    "log_probability": target_log_probability,
}


def get_objective(objective: str | LossFunction) -> LossFunction:
    """The function ``(logits [N, K], target [N]) -> [N]`` a map explains."""
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise InputError(
            f"Unknown objective {objective!r}; use one of {sorted(OBJECTIVES)} or a callable "
            "(logits, target) -> [N]."
        )
    return OBJECTIVES[objective]


def objective_name(objective: str | LossFunction) -> str:
    """A JSON-able name for an objective."""
    return objective if isinstance(objective, str) else getattr(objective, "__name__", "callable")


def common_options(objective: str | LossFunction, chunk: Any) -> dict[str, Any]:
    """The options every method reports: the objective's name and the chunk size."""
    return {"objective": objective_name(objective), "internal_batch_size": int(chunk)}


def build_attribution(
    method: str,
    maps: Any,
    logits: Any,
    targets: Any,
    score: Any,
    options: dict[str, Any],
    **extra: Any,
) -> Attribution:
    """An :class:`Attribution` from a compiled run's NumPy outputs: maps as float32, targets
    and predictions (argmax of the logits [N, K]) as int64; ``extra`` fills optional fields."""
    return Attribution(
        maps=np.asarray(maps, np.float32),
        target=np.asarray(targets).astype(np.int64),
        predicted=np.argmax(logits, axis=-1),
        method=method,
        options=options,
        score=score,
        **extra,
    )


def resolve_targets(classifier: Classifier, target: Any, n: int) -> tf.Tensor:
    """Target codes int32 [n]: class indices, or :data:`PREDICTED` for the predicted class.

    ``target`` is None or "predicted" (the model's own prediction), one class index for all
    images, or class indices [n] (for example the true labels).
    """
    if target is None or (isinstance(target, str) and target == "predicted"):
        return tf.fill((n,), PREDICTED)
    if isinstance(target, str):
        raise InputError(
            f"Unknown target {target!r}; give 'predicted', a class index or class indices [N]."
        )
    values = np.asarray(target)
    if values.ndim == 0:
        values = np.full((n,), values)
    return classifier.validate_labels(values, n, name="target")


def prepare_inputs(
    classifier: Any, x: Any, target: Any, internal_batch_size: Any
) -> tuple[Classifier, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Checked classifier, images, target codes and chunk size."""
    classifier = check_classifier(classifier)
    x = classifier.validate_images(x)
    if int(x.shape[0]) == 0:
        raise InputError("x holds no images.")
    targets = resolve_targets(classifier, target, int(x.shape[0]))
    chunk = positive_int(internal_batch_size, "internal_batch_size")
    return classifier, x, targets, tf.constant(chunk, tf.int32)


def fill_predicted(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Replace :data:`PREDICTED` codes by the argmax of the logits [N, K]."""
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.where(targets == PREDICTED, predicted, targets)


def explained(
    classifier: Classifier,
    objective: LossFunction,
    x: tf.Tensor,
    targets: tf.Tensor,
    chunk_size: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """In the graph: logits [N, K] of x, the target codes [N] resolved (see
    :func:`fill_predicted`) and the explained objective f(x) [N]."""
    logits = chunked_logits(classifier, x, chunk_size)
    targets = fill_predicted(targets, logits)
    return logits, targets, objective(logits, targets)


def over_chunks(
    total: tf.Tensor,
    chunk_size: tf.Tensor,
    body: Callable[[tf.Tensor, Any], Any],
    state: Any,
) -> Any:
    """Runs ``state = body(points, state)`` for the points 0 .. total - 1, ``chunk_size`` at a
    time (``points`` [B] the chunk's point numbers, B <= chunk_size), and returns the last state.
    One chunk runs at a time (``parallel_iterations=1``), so peak memory is that of one chunk."""

    def step(start: tf.Tensor, state: Any) -> tuple[Any, ...]:
        points = tf.range(start, tf.minimum(start + chunk_size, total))
        return start + chunk_size, body(points, state)

    _, state = tf.while_loop(
        lambda start, _: start < total, step, (tf.constant(0), state), parallel_iterations=1
    )
    return state


def sum_over_points(
    num_images: tf.Tensor,
    points_per_image: tf.Tensor | int,
    chunk_size: tf.Tensor,
    contributions: Callable[[tf.Tensor, tf.Tensor], Sequence[tf.Tensor]],
    accumulators: Sequence[tf.Tensor],
) -> tuple[tf.Tensor, ...]:
    """Per-image sums over points, computed ``chunk_size`` points at a time (see
    :func:`over_chunks`).

    Points are numbered t = i * M + j for image i < N and point j < M. Each chunk calls
    ``contributions(image_index [B], point_index [B])``, which returns one [B, ...] tensor per
    accumulator; rows are added to the accumulators [N, ...] at their image. Chunking changes
    only the float rounding of these sums.
    """

    def body(points: tf.Tensor, sums: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, ...]:
        image_index = points // points_per_image
        parts = contributions(image_index, points % points_per_image)
        rows = image_index[:, None]
        return tuple(
            tf.tensor_scatter_nd_add(s, rows, tf.cast(p, s.dtype))
            for s, p in zip(sums, parts, strict=True)
        )

    return tuple(over_chunks(num_images * points_per_image, chunk_size, body, tuple(accumulators)))


def chunked_logits(classifier: Classifier, x: tf.Tensor, chunk_size: tf.Tensor) -> tf.Tensor:
    """Logits [N, K] of x [N, H, W, C], ``chunk_size`` images per forward pass."""
    n = tf.shape(x)[0]
    (logits,) = sum_over_points(
        n,
        1,
        chunk_size,
        lambda image_index, _: (classifier.logits(tf.gather(x, image_index)),),
        (tf.zeros((n, classifier.num_classes)),),
    )
    return logits


COMPILED_ATTRIBUTE = "_robustkit_saliency_functions"


def compiled(classifier: Classifier, key: Any, build: Callable[[], Any]) -> Any:
    """The compiled function ``build()`` for this classifier and key, built once.

    Kept on the classifier itself, so it lives exactly as long as the classifier (a module-level
    cache would keep every classifier alive through the functions' closures).
    """
    functions = vars(classifier).setdefault(COMPILED_ATTRIBUTE, {})
    if key not in functions:
        functions[key] = build()
    return functions[key]


def image_spec(classifier: Classifier) -> tf.TensorSpec:
    """Input signature of a batch of images of any size."""
    return tf.TensorSpec((None, *classifier.input_shape), tf.float32)
