"""`TrainingHistory`: the per-epoch record that :meth:`AdversarialTrainer.fit` returns."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingHistory:
    """Per-epoch metrics and notable events of a training run, like Keras' ``History``.

    Attributes:
        epoch: epoch indices (0-based) in the order they ran.
        history: metric name -> one value per entry of ``epoch`` (NaN where not measured).
            Keys: loss, clean_loss, clean_accuracy, adv_loss, adv_accuracy, grad_norm,
            penalty, misalignment (GradAlign's 1 - cos), eps, lr, seconds; with validation data
            val_clean_loss, val_clean_accuracy, val_adv_loss, val_adv_accuracy; with the
            overfitting guard guard_accuracy (under the validation attack),
            guard_training_attack_accuracy and guard_fired (1.0 in an epoch where it fired).
        events: dicts ``{"epoch", "event", ...}`` for guard firings, roll-backs, early stops and
            the restoring of the best weights.
        best_epoch: epoch with the best robust validation accuracy (None without validation).
        best_val_adv_accuracy: that accuracy.
        stop_reason: why training ended before ``epochs`` (None when it ran to the end).
    """

    epoch: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_adv_accuracy: float | None = None
    stop_reason: str | None = None

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one epoch's metrics; metrics new in this epoch are NaN for earlier ones."""
        for name in logs:
            self.history.setdefault(name, [float("nan")] * len(self.epoch))
        for name, values in self.history.items():
            values.append(float(logs.get(name, float("nan"))))
        self.epoch.append(int(epoch))

    def add_event(self, epoch: int, event: str, **details: Any) -> None:
        """Record an event (guard firing, roll-back, early stop, best weights restored)."""
        self.events.append({"epoch": int(epoch), "event": event, **details})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return asdict(self)

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (NaN written as null)."""
        return json.dumps(_nan_to_none(self.to_dict()))

    @classmethod
    def from_json(cls, text: str) -> TrainingHistory:
        """The history that :meth:`to_json` wrote."""
        data = json.loads(text)
        data["history"] = {
            name: [float("nan") if v is None else v for v in values]
            for name, values in data["history"].items()
        }
        return cls(**data)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value
