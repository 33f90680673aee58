"""`ProgressLogger`: a Keras-style callback that shows training progress on a stream.

The library itself never prints; this callback writes only when a user passes it to
:meth:`AdversarialTrainer.fit` (by default to standard error).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import keras

# Metrics shown in the one-line epoch summary, in this order, when present.
SUMMARY_METRICS = (
    "loss",
    "clean_accuracy",
    "adv_accuracy",
    "val_clean_accuracy",
    "val_adv_accuracy",
    "guard_accuracy",
    "guard_training_attack_accuracy",
    "grad_norm",
    "eps",
    "lr",
)


class ProgressLogger(keras.callbacks.Callback):
    """Writes ``epoch 3/20  step 40/63`` while an epoch runs and one summary line after it.

    Args:
        stream: where to write (default ``sys.stderr``).
        every: redraw the step counter every this many batches (0: only the epoch lines).
    """

    def __init__(self, stream: TextIO | None = None, every: int = 10) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.every = int(every)
        self._epoch = 0
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.every and (batch + 1) % self.every == 0:
            total = self.params.get("steps") or "?"
            self._write(
                f"\repoch {self._epoch + 1}/{self.params.get('epochs')}  step {batch + 1}/{total}"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        shown = "  ".join(f"{name} {logs[name]:.4g}" for name in SUMMARY_METRICS if name in logs)
        seconds = time.perf_counter() - self._started
        self._write(f"\repoch {epoch + 1}/{self.params.get('epochs')}  {seconds:.1f}s  {shown}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
