"""Watch the raw folder and params.yaml; emit one Prefect event per settled change.

Polling (size + mtime of every file) rather than inotify: it works on network and container
mounts, and a video still being copied keeps changing, so the watcher waits until the
folder has been quiet for ``settle_s`` before it emits. A raw folder written by a stage of
the pipeline itself (the demo's data/demo) is not watched: its changes are the pipeline's
own and its inputs are params, which are watched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.pipeline_flow import EVENT, dvc, parse_dot, workspace_resource

log = logging.getLogger("flows.watch")
Snapshot = dict[str, tuple[int, int]]


def snapshot(root: Path, targets: list[Path]) -> Snapshot:
    """{relative path: (size, mtime_ns)} of every file under ``targets`` (files or folders)."""
    out: Snapshot = {}
    for target in targets:
        if target.is_file():
            st = target.stat()
            out[target.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
            continue
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if name.startswith("."):  # editors' and our own atomic-write temp files
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.stat()
                except FileNotFoundError:  # removed while we walked
                    continue
                out[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Paths added, removed or modified between two snapshots, sorted."""
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def watch_targets(root: Path) -> tuple[list[Path], list[str]]:
    """params.yaml and the configured raw folder, unless a DVC stage writes that folder.

    Returns the targets and notes to log (why something is not watched)."""
    from pipeline.core.config import load_params

    root = Path(root).resolve()
    params = load_params(root / "params.yaml")
    raw = (root / params.data.raw_dir).resolve()
    code, out = dvc(root, "dag", "--outs", "--dot")
    outs = {(root / o).resolve() for o in parse_dot(out).stages} if code == 0 else set()
    if raw in outs or any(o in raw.parents for o in outs):
        note = f"{params.data.raw_dir} is written by a pipeline stage (the demo): watching params.yaml only"
        return [root / "params.yaml"], [note]
    if not raw.is_relative_to(root):
        return [root / "params.yaml"], [f"{raw} lies outside the workspace: watching params.yaml only"]
    return [root / "params.yaml", raw], []


def emit_change(root: Path, changed: list[str]) -> Any:
    """Send the change event the deployment's trigger waits for; fail loudly if there is no server."""
    from prefect.events import emit_event

    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    event = emit_event(
        event=EVENT,
        resource=workspace_resource(root),
        payload={"changed": changed[:200], "count": len(changed), "reason": f"inputs changed: {shown}"},
    )
    if event is None:
        raise RuntimeError("the event could not be sent: set PREFECT_API_URL to a running Prefect server")
    log.info("event %s sent: %d changed (%s)", EVENT, len(changed), shown)
    return event


def watch(
    root: Path,
    interval_s: float = 2.0,
    settle_s: float = 5.0,
    stop: threading.Event | None = None,
    on_change: Callable[[Path, list[str]], Any] = emit_change,
    ready: threading.Event | None = None,
) -> None:
    """Poll until ``stop`` is set; call ``on_change`` once per settled batch of changes. ``ready`` is
    set once the first snapshot is taken (changes before it are the starting state, not changes)."""
    root = Path(root).resolve()
    stop = stop or threading.Event()
    targets = _targets(root, [])
    base = snapshot(root, targets)
    if ready is not None:
        ready.set()
    while not stop.wait(interval_s):
        now = snapshot(root, targets)
        if not changes(base, now):
            continue
        quiet_since, last = time.monotonic(), now
        while time.monotonic() - quiet_since < settle_s and not stop.wait(interval_s):
            cur = snapshot(root, targets)
            if changes(last, cur):
                quiet_since, last = time.monotonic(), cur
        changed = changes(base, last)
        if changed:
            on_change(root, changed)
        if "params.yaml" in changed:  # data.raw_dir may point elsewhere now: files already in a newly
            targets = _targets(root, targets)  # watched folder are reported by the next poll
            rel = [t.relative_to(root).as_posix() for t in targets]
            last = {p: v for p, v in last.items() if any(p == r or p.startswith(r + "/") for r in rel)}
        base = last


def _targets(root: Path, current: list[Path]) -> list[Path]:
    """(Re)read what to watch; on a params.yaml that does not load, keep ``current`` (the run that the
    change starts reports the bad key)."""
    try:
        targets, notes = watch_targets(root)
    except Exception as exc:
        if not current:
            raise
        log.warning("params.yaml does not load (%s): still watching %s", exc, ", ".join(map(str, current)))
        return current
    for note in notes:
        log.info(note)
    log.info("watching %s", ", ".join(str(t.relative_to(root)) for t in targets))
    return targets
