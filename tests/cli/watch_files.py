"""Run ``robustkit ARGS...`` with every file access recorded: ``python watch_files.py LOG ARGS...``.

A Python audit hook writes one JSON line per opened, created, renamed, removed or listed path
to LOG (``{"event": ..., "path": ..., "write": bool}``), so a test can check which files a real
run read and wrote. Accesses by native code (TensorFlow's own file system) are not seen; every
image, label, report and model file robustkit touches goes through Python's ``open``/``os``.
"""

from __future__ import annotations

import json
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
WRITE_EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.symlink", "os.truncate"}
READ_EVENTS = {"os.listdir", "os.scandir"}


def main() -> None:
    log = open(sys.argv[1], "a", encoding="utf-8")  # kept open: the hook writes to it
    seen: set[tuple[str, str, bool]] = set()

    def record(event: str, path: object, write: bool) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):  # a file descriptor
            return
        key = (event, os.path.abspath(path), write)
        if key not in seen:
            seen.add(key)
            log.write(json.dumps({"event": event, "path": key[1], "write": write}) + "\n")
            log.flush()

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            write = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
            record(event, path, write)
        elif event in WRITE_EVENTS:
            record(event, args[0], True)
            if event == "os.rename":
                record(event, args[1], True)
        elif event in READ_EVENTS:
            record(event, args[0], False)

    sys.addaudithook(hook)
    from robustkit_cli.main import main as robustkit

    robustkit(sys.argv[2:])


if __name__ == "__main__":
    main()
