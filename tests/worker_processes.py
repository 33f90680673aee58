"""Fresh Python processes for tests: scripts that need a TensorFlow of their own, alone or as
the workers of a local multi-worker cluster (``TF_CONFIG`` on free ``127.0.0.1`` ports).

:class:`Processes` starts them from the repository root with their output in files (so a
chatty process cannot block on a full pipe) and kills every one still running when its block
ends, whatever happened; a wait that times out says so with the tail of every process's output.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPOSITORY = Path(__file__).resolve().parents[1]
TAIL = 3000  # characters of a process's output shown when it fails


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH, plus ``extra``."""
    path = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of a cluster of workers on 127.0.0.1:ports."""
    workers = [f"127.0.0.1:{port}" for port in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


@dataclass
class Finished:
    """A process that ended: its exit status, output and how long it ran (seconds)."""

    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def result(self) -> Any:
        """The JSON object of its last stdout line, once it is known to have succeeded."""
        assert self.returncode == 0, f"{self.name} failed:\n{self.stderr[-TAIL:]}"
        return json.loads(self.stdout.strip().splitlines()[-1])


class Processes:
    """Python scripts started together; a context manager that kills the ones still running
    when its block ends."""

    def __init__(self) -> None:
        self._started: dict[str, tuple[subprocess.Popen, IO[str], IO[str], float]] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_: object) -> None:
        for name in list(self._started):
            self.kill(name)
            self.wait(name, timeout=30)
        for _, stdout, stderr, _ in self._started.values():
            stdout.close()
            stderr.close()

    def start(self, name: str, script: Path, *args: str, **env: str) -> None:
        """Run ``python script args`` from the repository root as ``name``, with ``env``
        added to the environment."""
        stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=stdout,
            stderr=stderr,
            text=True,
            cwd=REPOSITORY,
            env=environment(**env),
        )
        self._started[name] = (process, stdout, stderr, time.monotonic())

    def running(self, name: str) -> bool:
        return self._started[name][0].poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` if it is still running."""
        process = self._started[name][0]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)

    def wait(self, name: str, timeout: float) -> Finished:
        """Wait up to ``timeout`` seconds for ``name`` to end; on timeout every process is
        killed and the test fails with all their outputs."""
        process, stdout, stderr, started = self._started[name]
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in self._started:
                self.kill(other)
            raise AssertionError(
                f"{name} did not end within {timeout:.0f} s; every process was killed.\n"
                + self.outputs()
            ) from None
        stdout.seek(0)
        stderr.seek(0)
        text = stdout.read(), stderr.read()
        return Finished(name, process.returncode, *text, time.monotonic() - started)

    def outputs(self) -> str:
        """The tail of every process's stderr, for a failure message."""
        parts = []
        for name, (_, _, stderr, _) in self._started.items():
            stderr.seek(0)
            parts.append(f"--- {name} stderr ---\n{stderr.read()[-TAIL:]}")
        return "\n".join(parts)

    def wait_for_file(self, path: Path, timeout: float, watched: Sequence[str]) -> None:
        """Wait until ``path`` exists; fail (killing every process) if one of the ``watched``
        processes ends first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            ended = [name for name in watched if not self.running(name)]
            if ended or time.monotonic() > deadline:
                for name in self._started:
                    self.kill(name)
                why = f"{', '.join(ended)} ended" if ended else f"{timeout:.0f} s passed"
                raise AssertionError(f"{why} before {path} appeared.\n" + self.outputs())
            time.sleep(0.2)


def run_fresh(script: Path, *args: str, timeout: float = 300) -> Any:
    """Run ``script`` alone in a new process; the JSON object of its last stdout line."""
    with Processes() as processes:
        processes.start(script.name, script, *args)
        return processes.wait(script.name, timeout).result()


def run_cluster(
    script: Path,
    worker_args: Sequence[str],
    reference_args: Sequence[str] | None = None,
    workers: int = 2,
    timeout: float = 300,
) -> tuple[Any, list[Any]]:
    """Run ``script worker_args`` as the ``workers`` tasks of a local cluster and, at the same
    time, ``script reference_args`` alone without ``TF_CONFIG`` (skipped when None); their
    JSON results (the reference's or None, [worker 0's, worker 1's, ...])."""
    ports = free_ports(workers)
    with Processes() as processes:
        if reference_args is not None:
            processes.start("reference", script, *reference_args)
        for index in range(workers):
            processes.start(
                f"worker {index}", script, *worker_args, TF_CONFIG=tf_config(ports, index)
            )
        results = [processes.wait(f"worker {i}", timeout).result() for i in range(workers)]
        alone = None
        if reference_args is not None:
            alone = processes.wait("reference", timeout).result()
    return alone, results
