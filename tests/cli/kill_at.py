"""Run ``robustkit ARGS...`` and SIGKILL it at an exact point: ``python kill_at.py POINT N ARGS``;
``python kill_at.py POINT N --script FILE.py ARGS`` runs a Python script instead (as ``__main__``,
with ARGS as its command line), e.g. examples/train_robust_mnist.py.

POINT says where the process kills itself, at the N-th time (1-based) it gets there:

- ``batch``: a batch of images was just decoded; nothing of it is computed or written yet;
- ``before-replace``: a temporary file is complete but not yet renamed to its final name;
- ``after-replace``: a file was just renamed to its final name (between two writes);
- ``journal``: half of a journal line is written (the line is cut mid-way);
- ``pause``: a batch was just decoded; print "paused" and wait to be killed from outside;
- ``train-step``: a training step just updated the weights (mid-epoch unless it was the last);
- ``checkpoint-files``: a training checkpoint's files are written, but the ``checkpoint`` state
  file does not name it yet (N counts the checkpoints saved);
- ``checkpoint-saved``: a training checkpoint was just saved, state file included.

The process dies by a real SIGKILL (no Python clean-up, no ``finally``), as from ``kill -9``.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from robustkit.io import ImageFolder, RunJournal, to_jsonable

KILLED = -signal.SIGKILL  # the return code of a process this harness killed


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def pause() -> None:
    print("paused", flush=True)
    time.sleep(600)


def on_call(
    count: int, before: bool, stop: Callable[[], None] = die
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a function so that its ``count``-th call stops (dies) before or after running."""
    calls = 0

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if before and calls == count:
                stop()
            result = function(*args, **kwargs)
            if not before and calls == count:
                stop()
            return result

        return wrapped

    return wrap


def cut_journal_line(count: int) -> None:
    """The ``count``-th journal append writes half its text, flushed, then dies."""
    original = RunJournal.append
    calls = 0

    def append(self: RunJournal, rows: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < count:
            return original(self, rows)
        text = "".join(json.dumps(to_jsonable(row)) + "\n" for row in rows)
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(text[: len(text) // 2])
            stream.flush()
            os.fsync(stream.fileno())
        die()

    RunJournal.append = append  # type: ignore[method-assign]


def die_before_naming_checkpoint(count: int) -> None:
    """The ``count``-th training checkpoint dies once its files are written, before the
    ``CheckpointManager`` records it in the ``checkpoint`` state file."""
    import tensorflow as tf

    from robustkit.training.checkpoints import TrainingCheckpoints

    saves = 0
    save, record = TrainingCheckpoints.save, tf.train.CheckpointManager._record_state

    def counted_save(self: TrainingCheckpoints, epoch: int) -> str:
        nonlocal saves
        saves += 1
        return save(self, epoch)

    def recording(self: tf.train.CheckpointManager) -> None:
        if saves == count:
            die()
        record(self)

    TrainingCheckpoints.save = counted_save  # type: ignore[method-assign]
    tf.train.CheckpointManager._record_state = recording  # type: ignore[method-assign]


def install(point: str, count: int) -> None:
    """Make this process die (or pause) the ``count``-th time it gets to ``point``."""
    if point in ("batch", "pause"):
        stop = pause if point == "pause" else die
        read = on_call(count, before=False, stop=stop)(ImageFolder.read_batch)
        ImageFolder.read_batch = read  # type: ignore[method-assign]
    elif point in ("before-replace", "after-replace"):
        os.replace = on_call(count, before=point == "before-replace")(os.replace)
    elif point == "journal":
        cut_journal_line(count)
    elif point == "train-step":
        import keras

        callbacks = keras.callbacks.CallbackList
        callbacks.on_train_batch_end = on_call(count, before=False)(callbacks.on_train_batch_end)
    elif point == "checkpoint-files":
        die_before_naming_checkpoint(count)
    elif point == "checkpoint-saved":
        from robustkit.training.checkpoints import TrainingCheckpoints

        TrainingCheckpoints.save = on_call(count, before=False)(TrainingCheckpoints.save)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    point, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    install(point, count)
    if args[:1] == ["--script"]:
        sys.argv = args[1:]
        runpy.run_path(args[1], run_name="__main__")
        return
    from robustkit_cli.main import main as robustkit

    robustkit(args)


if __name__ == "__main__":
    main()
