"""One pipeline run at a time per workspace: an advisory file lock under ``.dvc/tmp/flows``.

Two triggers arriving together (a cron tick and a file-change event, or a manual run while
the deployment is busy) must not start two ``dvc repro`` on one workspace. The second run
waits for the lock up to a limit, logging who holds it, and is then skipped with a clear
line. The lock is released by the OS when its holder dies, so a killed run never leaves a
stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = "pipeline.lock"


def state_dir(root: Path) -> Path:
    """Where the flows keep their workspace state (git-ignored by DVC's own .dvc/.gitignore)."""
    return Path(root) / ".dvc" / "tmp" / "flows"


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096).decode(errors="replace")
    try:
        info = json.loads(raw)
    except ValueError:
        return "an unknown process"
    who, pid, host, since = (info.get(k, "?") for k in ("who", "pid", "host", "since"))
    return f"{who} (pid {pid} on {host}, since {since})"


@contextlib.contextmanager
def workspace_lock(
    root: Path, who: str, wait_s: float, log: Callable[[str], None], poll_s: float = 0.5
) -> Iterator[bool]:
    """Hold the workspace lock for the ``with`` body; yield False if it stayed busy ``wait_s`` seconds."""
    path = state_dir(root) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    acquired = False
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    log(
                        f"skipped: another pipeline run still holds the workspace lock after {wait_s:g} s: "
                        f"{_holder(fd)}. Nothing was run here; the next trigger will try again ({path})."
                    )
                    break
                if not waiting:
                    log(f"waiting up to {wait_s:g} s: another pipeline run holds the workspace lock: {_holder(fd)}")
                    waiting = True
                time.sleep(poll_s)
        if waiting and acquired:
            log("workspace lock acquired after waiting")
        if acquired:
            info = {"who": who, "pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(info).encode())
        yield acquired
    finally:
        if acquired:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
