"""One run at a time per output folder: a lock file holding the owner's pid and host.

The lock file is created exclusively, so of two runs started on the same folder only one
proceeds; the other raises :class:`~robustkit.errors.OutputExistsError` naming the owner. A lock
left by a process that no longer runs (killed, machine restarted) is taken over with a logged
warning. Locks of another host cannot be checked and are never taken over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from robustkit.errors import OutputExistsError

logger = logging.getLogger(__name__)

LOCK_NAME = ".robustkit.lock"


def _is_running(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    if os.name == "nt":  # no harmless signal-0 probe on Windows: assume it may still run
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


class RunLock:
    """The lock of output folder ``folder``: ``with RunLock(out): ...`` holds it for the block.

    Acquiring creates ``folder`` when missing; releasing removes the lock file, and the folder
    too when the lock created it and nothing was written there.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}
        self._created_folder = False
        self._held = False

    def _read_owner(self) -> dict[str, Any] | None:
        """The owner recorded in the lock file; None when it is unreadable or being written."""
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    def _refuse(self, owner: dict[str, Any] | None) -> OutputExistsError:
        if owner is None:
            return OutputExistsError(
                f"{self.folder} is in use by another robustkit run (its lock file {self.path} is "
                "unreadable or still being written). If no run uses the folder, delete that file."
            )
        return OutputExistsError(
            f"{self.folder} is in use by another robustkit run (pid {owner['pid']} on "
            f"{owner.get('host')}). Wait for it to finish or choose another output folder; if "
            f"that process is not a robustkit run, delete {self.path}."
        )

    def acquire(self) -> RunLock:
        """Take the lock, or raise OutputExistsError naming the run that holds it."""
        self._created_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                json.dump(self.owner, stream)
            self._held = True
            return self

    def _take_over_if_stale(self) -> None:
        """Remove a lock whose owner no longer runs on this host (logged); else raise."""
        owner = self._read_owner()
        if owner is None:
            if not self.path.exists():  # released meanwhile: try again
                return
            raise self._refuse(None)
        if owner.get("host") != self.owner["host"] or _is_running(owner["pid"]):
            raise self._refuse(owner)
        if self._read_owner() != owner:  # another run took it over meanwhile
            return
        logger.warning(
            "taking over the lock of %s left by pid %d, which no longer runs (an interrupted run)",
            self.folder,
            owner["pid"],
        )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Give the lock back (only a held lock is removed)."""
        if not self._held:
            return
        self._held = False
        self.path.unlink(missing_ok=True)
        if self._created_folder:
            with contextlib.suppress(OSError):  # not empty: the run wrote results
                self.folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
