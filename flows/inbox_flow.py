"""Batch scoring on a schedule: videos dropped into an inbox folder are scored with the
recommended model (``driver-pipeline predict``) and each run's summary is published as a
Prefect artifact.

Same conventions as the pipeline deployment (flows/pipeline_flow.py): the same server
(``make serve`` serves both deployments), the same workspace lock (flows/lock.py: scoring never
reads a model while ``dvc repro`` is replacing it; a busy workspace means wait, then skip), and
the flow drives the command, never re-implements it. A video is scored once: the ledger
``<out>/scored.json`` remembers each file by path, size and modification time (a replaced file
is scored again); files still changing (being copied) wait for the next run.

    python -m flows inbox                      # one run now
"""

from __future__ import annotations

import csv
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.lock import workspace_lock
from flows.pipeline_flow import _run_name, error_lines, python_module, stage_env

LEDGER = "scored.json"
DEPLOYMENT = "driver-inbox"


def _key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def new_videos(inbox: Path, ledger: dict[str, Any], settle_s: float) -> tuple[list[str], list[str]]:
    """(videos not scored yet, videos still being written) in ``inbox``, as paths relative to it."""
    from pipeline.apply.predict import VIDEO_SUFFIXES

    now = time.time()
    todo, settling = [], []
    for p in sorted(inbox.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        rel = p.relative_to(inbox).as_posix()
        if {k: ledger.get(rel, {}).get(k) for k in ("size", "mtime_ns")} == _key(p):
            continue
        (settling if now - p.stat().st_mtime < settle_s else todo).append(rel)
    return todo, settling


@task(name="predict", cache_policy=NO_CACHE)
def score(workspace: str, inbox: str, videos: list[str], out: str, model: str, mode: str) -> dict[str, Any]:
    """``driver-pipeline predict`` on the listed videos (a CSV of them, inside the inbox)."""
    from pipeline.core.files import read_json

    listing = Path(inbox) / f".driver-inbox-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.csv"
    with listing.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video"])
        w.writerows([v] for v in videos)
    try:
        args = ["predict", str(listing), "--out", out, "--mode", mode, *(["--model", model] if model else [])]
        code, output = python_module(Path(workspace), "pipeline.cli", *args, stream=True, env=stage_env())
    finally:
        listing.unlink(missing_ok=True)
    if code != 0:
        raise RuntimeError(f"predict failed (exit {code}): {error_lines(output)}")
    return read_json(Path(out) / "summary.json")


@flow(name="driver-inbox", log_prints=True)
def score_inbox(
    workspace: str = ".",
    inbox: str = "data/inbox",
    out: str = "predictions/inbox",
    model: str = "",
    mode: str = "report",
    settle_s: float = 5.0,
    lock_wait_s: float = 60.0,
) -> Any:
    """Score the inbox's new videos with ``model`` ("" = the report's recommendation for ``mode``)
    and publish the run's summary (artifact ``driver-inbox-summary``).

    Args:
        workspace: the project folder (models/, reports/, params.yaml).
        inbox: folder (relative to the workspace) where new videos are dropped.
        out: where each run's predictions go (``<out>/<run time>/``) and the ledger lives.
        mode: ``report`` (recall first, post-hoc: the default for recorded drives) or ``alert``.
        lock_wait_s: how long to wait for a pipeline run on the workspace before skipping (the next
            scheduled run tries again, so this is short).
    """
    from prefect.artifacts import create_markdown_artifact

    from pipeline.core.files import read_json, write_json

    log = get_run_logger()
    root = Path(workspace).resolve()
    box, out_root = root / inbox, root / out
    if not box.is_dir():
        raise FileNotFoundError(f"inbox {box} does not exist: create it and drop videos there")
    ledger_path = out_root / LEDGER
    ledger = read_json(ledger_path) if ledger_path.exists() else {}
    todo, settling = new_videos(box, ledger, settle_s)  # before the lock: an idle inbox never waits
    if settling:
        log.info("still being written (next run): %s", ", ".join(settling))
    if not todo:
        log.info("no new videos in %s", box)
        return {"status": "nothing new", "settling": settling}
    run_name = _run_name()
    with workspace_lock(root, who=f"inbox run {run_name}", wait_s=lock_wait_s, log=log.warning) as acquired:
        if not acquired:
            return Completed(name="Skipped", message="the workspace is busy (pipeline run)", data={"status": "skipped"})
        run_dir = out_root / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        log.info("scoring %d new video(s) into %s", len(todo), run_dir)
        summary = score(str(root), str(box), todo, str(run_dir), model, mode)
        md = (run_dir / "summary.md").read_text()
        lines = [f"# Inbox run {run_name}\n", f"{len(todo)} new video(s) from `{box}`; outputs in `{run_dir}`.\n", md]
        create_markdown_artifact(markdown="\n".join(lines), key="driver-inbox-summary", description="Scored videos")
        for rel in todo:
            ledger[rel] = {**_key(box / rel), "run": run_dir.name}
        write_json(ledger_path, ledger)
        return {
            "status": "scored",
            "videos": todo,
            "out": str(run_dir),
            "alerts": {v["video"]: v["alerts"] for v in summary["videos"].values()},
            "quarantined": [q["video"] for q in summary["quarantined"]],
        }
