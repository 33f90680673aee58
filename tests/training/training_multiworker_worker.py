"""Trains a tiny model as one task of a MultiWorkerMirroredStrategy cluster (``TF_CONFIG`` set)
or alone without a strategy (no ``TF_CONFIG``); one CPU thread either way.

Prints a JSON object: this task's index (None alone), the final weights, the history and the
folder of every checkpoint this process wrote.
``--block-at EPOCH:BATCH`` makes worker 1 touch ``--marker`` at the start of that batch
(0-based) and wait there, for the test to kill it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_helpers import blobs, small_cnn, weights_of

from robustkit.attacks import PGD
from robustkit.optimizers import clipped_noisy
from robustkit.training import AdversarialTrainer

X, Y = blobs(52, seed=4)  # global batches of 16, 16, 16 and 4 examples
X_VAL, Y_VAL = blobs(20, seed=5)
BLOCKED_WORKER = 1
COLLECTIVE_TIMEOUT = 120.0  # seconds a collective waits for a peer that hangs
SAVED_TO: list[str] = []  # the folder of every checkpoint this process writes


def record_saves() -> None:
    """Append the folder of every checkpoint saved from now on to SAVED_TO."""
    save = tf.train.CheckpointManager.save

    def recorded(manager: tf.train.CheckpointManager, *args: object, **kwargs: object) -> str:
        SAVED_TO.append(manager.directory)
        return save(manager, *args, **kwargs)

    tf.train.CheckpointManager.save = recorded


class BlockAt(keras.callbacks.Callback):
    """Touch ``marker`` at the start of batch ``batch`` of epoch ``epoch``, then wait."""

    def __init__(self, epoch: int, batch: int, marker: Path) -> None:
        super().__init__()
        self.at, self.marker, self.epoch = (epoch, batch), marker, -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if (self.epoch, batch) == self.at:
            self.marker.touch()
            time.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--log-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--block-at")
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    record_saves()
    task = None
    strategy = tf.distribute.get_strategy()
    if "TF_CONFIG" in os.environ:
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=COLLECTIVE_TIMEOUT
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        task = int(strategy.cluster_resolver.task_id)
    callbacks = []
    if args.block_at and task == BLOCKED_WORKER:
        epoch, batch = map(int, args.block_at.split(":"))
        callbacks.append(BlockAt(epoch, batch, args.marker))
    with strategy.scope():
        model = small_cnn(seed=11)
        # clipping must see the global gradient and the noise must be drawn once per step
        optimizer = clipped_noisy(keras.optimizers.SGD(0.2, momentum=0.9), 0.3, 0.05, seed=2)
        trainer = AdversarialTrainer(
            model,
            optimizer,
            PGD("linf", 0.1, steps=2, random_start=False),
            method="mixed",
            validation_attack=PGD("linf", 0.1, steps=2),
            restore_best=False,
        )
        history = trainer.fit(
            (X, Y),
            args.epochs,
            validation=(X_VAL, Y_VAL),
            batch_size=16,
            callbacks=callbacks,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            log_dir=args.log_dir,
        )
    report = {
        "task": task,
        "validation_replicas": trainer.validator.executor.replicas,
        "weights": [w.tolist() for w in weights_of(model)],
        "history": history.history,
        "saved_to": SAVED_TO,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
