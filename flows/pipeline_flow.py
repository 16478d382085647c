"""The Prefect flow that drives DVC: ask what is stale, run it stage by stage, publish the report.

DVC owns the DAG and the caching; this flow owns *when* (schedule, file-change events) and
what a person sees (one task per stage with its log, artifacts with the summary and what
changed). Every command is an argument list run without a shell.

    python -m flows run            # one run now, against $PREFECT_API_URL (or a temporary server)
    python -m flows serve          # local server + deployment with cron and event trigger (README)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.states import Completed

from flows.lock import state_dir, workspace_lock
from pipeline.core.runtime import tool_env

EVENT = "driver-pipeline.inputs.changed"  # what the watcher emits and the deployment trigger expects
SNAPSHOT = "last_success.json"
HEADLINE = (
    "cv.macro_f1",
    "cv.interval.macro_f1.lo",
    "cv.interval.macro_f1.hi",
    "cv.accuracy",
    "gap",
    "ece",
    "parameters",
)
TRANSIENT = (
    "Unable to acquire lock",  # somebody ran dvc by hand in this workspace meanwhile
    "exited with -9",  # killed (out of memory): a retry may land on a quieter machine
    "CommClosedError",  # a Dask worker or scheduler went away mid-stage
    "Timed out trying to connect",
)


class PipelineFailed(RuntimeError):
    """One or more stages failed; the message lists each with its own error lines."""


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's own error lines."""

    def __init__(self, stage: str, returncode: int, detail: str) -> None:
        super().__init__(f"stage '{stage}' failed (exit {returncode}): {detail}")
        self.stage = stage
        self.transient = any(t in detail for t in TRANSIENT)


@dataclass(frozen=True)
class Dag:
    """Stage names in dvc.yaml order and data-flow edges (upstream, downstream), as DVC reports them."""

    stages: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]


# --- pure helpers --------------------------------------------------------------------------------
def workspace_resource(root: Path) -> dict[str, str]:
    """The Prefect event resource naming one workspace (so two checkouts never trigger each other)."""
    root = Path(root).resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return {"prefect.resource.id": f"driver-pipeline.workspace.{digest}", "prefect.resource.name": str(root)}


def parse_dot(text: str) -> Dag:
    """Parse ``dvc dag --dot``: node lines ``"name";`` and edge lines ``"a" -> "b";``."""
    stages: list[str] = []
    edges: list[tuple[str, str]] = []
    for line in text.splitlines():
        if m := re.fullmatch(r'\s*"([^"]+)"\s*->\s*"([^"]+)"\s*;?\s*', line):
            edges.append((m[1], m[2]))
        elif m := re.fullmatch(r'\s*"([^"]+)"\s*;?\s*', line):
            stages.append(m[1])
    return Dag(tuple(stages), tuple(edges))


def downstream(starts: Iterable[str], dag: Dag) -> set[str]:
    """``starts`` and every stage that depends on them, directly or not."""
    down: dict[str, set[str]] = {}
    for a, b in dag.edges:
        down.setdefault(a, set()).add(b)
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        s = stack.pop()
        if s not in seen:
            seen.add(s)
            stack.extend(down.get(s, ()))
    return seen


def plan(stale: Iterable[str], dag: Dag) -> list[str]:
    """The stale stages and everything downstream of them, in DAG order (dvc.yaml order among equals)."""
    todo = downstream(stale, dag)
    rank = {s: i for i, s in enumerate(dag.stages)}
    indeg = dict.fromkeys([*dag.stages, *(x for e in dag.edges for x in e)], 0)
    for _, b in dag.edges:
        indeg[b] += 1
    ready = sorted((s for s, d in indeg.items() if d == 0), key=lambda s: rank.get(s, len(rank)))
    order: list[str] = []
    while ready:
        s = ready.pop(0)
        order.append(s)
        for a, b in dag.edges:
            if a == s:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
        ready.sort(key=lambda s: rank.get(s, len(rank)))
    return [s for s in order if s in todo]


def inputs_unchanged(stage: str, stale: Iterable[str], dag: Dag, outcomes: dict[str, str]) -> bool:
    """True if ``stage`` was not stale and every upstream stage this run visited left its outputs as
    they were ("unchanged"): then DVC would find it unchanged too, and asking costs a DVC start-up."""
    ups = [a for a, b in dag.edges if b == stage and a in outcomes]
    return stage not in stale and bool(ups) and all(outcomes[a] == "unchanged" for a in ups)


def error_lines(output: str, limit: int = 6) -> str:
    """The lines of a failed stage's output a person needs: our ``error:`` lines, DVC's ``ERROR:``
    lines and the exception line of a traceback; else the last few lines."""
    lines = [ln.rstrip() for ln in output.splitlines() if ln.strip()]
    keep = [
        ln
        for ln in lines
        if ln.startswith(("error:", "ERROR:", "ERROR ")) or re.match(r"^[A-Za-z_.]*(Error|Exception|Failed)\b.*:", ln)
    ]
    return " | ".join((keep or lines)[-limit:]) or "(no output)"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {"a.b.c": leaf}."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def snapshot(root: Path) -> dict[str, Any]:
    """Params and per-model metrics of the workspace as it is now (what a later run compares with)."""
    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    models = params.get("train", {}).get("models", [])
    metrics = {}
    for m in models:
        path = root / "reports" / "models" / m / "metrics.json"
        if path.exists():
            metrics[m] = flatten(json.loads(path.read_text()))
    return {"params": flatten(params), "metrics": metrics, "models": list(models)}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"`{v}`" if isinstance(v, (list, dict)) else str(v)


def diff_markdown(before: dict[str, Any] | None, now: dict[str, Any], since: str = "") -> str:
    """Markdown: params that changed and each model's headline metrics before -> now."""
    if before is None:
        return "No previous successful run of this flow in this workspace: nothing to compare with yet.\n"
    out = [f"Compared with the previous successful run{f' ({since})' if since else ''}.\n"]
    pb, pn = before.get("params", {}), now["params"]
    changed = sorted(k for k in set(pb) | set(pn) if pb.get(k) != pn.get(k))
    if changed:
        out += ["**Params changed**\n", "| param | before | now |", "|---|---|---|"]
        out += [f"| `{k}` | {_fmt(pb.get(k))} | {_fmt(pn.get(k))} |" for k in changed]
    else:
        out.append("**Params**: unchanged.")
    mb, mn = before.get("metrics", {}), now["metrics"]
    rows, other = [], 0
    for m in dict.fromkeys([*now.get("models", []), *mb]):
        a, b = mb.get(m, {}), mn.get(m, {})
        for k in sorted(set(a) | set(b), key=lambda k: (HEADLINE.index(k) if k in HEADLINE else len(HEADLINE), k)):
            if a.get(k) == b.get(k):
                continue
            if k in HEADLINE:
                x, y = a.get(k), b.get(k)
                delta = f"{y - x:+.4g}" if isinstance(x, (int, float)) and isinstance(y, (int, float)) else ""
                rows.append(f"| `{m}` | {k} | {_fmt(x)} | {_fmt(y)} | {delta} |")
            else:
                other += 1
    out.append("")
    if rows:
        out += ["**Metrics changed**\n", "| model | metric | before | now | Δ |", "|---|---|---|---|---|", *rows]
    else:
        out.append("**Headline metrics**: unchanged.")
    if other:
        out.append(
            f"\n{other} other metric values changed (per-class scores, thresholds, latency); "
            "`dvc metrics diff` lists them all once committed."
        )
    return "\n".join(out) + "\n"


def metrics_table(now: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model (params order) with its headline cross-validated metrics."""
    rows = []
    for m in now.get("models", []):
        met = now["metrics"].get(m)
        if met is not None:
            rows.append({"model": m, **{k: met.get(k) for k in HEADLINE}, "latency_ms": met.get("latency_ms")})
    return rows


# --- running commands ----------------------------------------------------------------------------
def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called through .fn outside a run
        return logging.getLogger("flows")


def stage_env(dask_address: str = "") -> dict[str, str]:
    """Environment for DVC and the stages: this interpreter's bin first (stages call ``python -m``)."""
    env = tool_env()
    if dask_address:
        from pipeline.core.parallel import ENV_ADDRESS

        env[ENV_ADDRESS] = dask_address
    return env


# DVC's advice after each `dvc repro` ("To track the changes with git, run: git add dvc.lock ...",
# "To enable auto staging, run: dvc config core.autostage true"): the flow never commits, and
# with one `dvc repro` per stage it would fill every task log. The stage's own lines stay.
GIT_HINT = re.compile(r"^(To track the changes with git, run:|To enable auto staging, run:|\s+(git add|dvc config) )")


def _dies_with_parent() -> None:  # runs in the child between fork and exec
    from pipeline.core.parallel import die_with_parent

    die_with_parent(os.getppid())


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the child's whole process group (dvc, the stage, its workers), SIGKILL after a grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def dvc(root: Path, *args: str, stream: bool = False, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``python -m dvc *args`` in ``root``: see :func:`python_module`."""
    return python_module(root, "dvc", *args, stream=stream, env=env)


def python_module(
    root: Path, module: str, *args: str, stream: bool = False, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``python -m <module> *args`` in ``root`` (argument list, no shell) -> (exit code, output).

    ``stream``: merge stderr into the output and log each line as it comes (the stage's own log);
    otherwise stdout alone is returned (clean for ``--json``) and stderr only on failure.

    The command runs in its own process group and dies with this process: if this run is
    stopped (SIGTERM, Ctrl-C, a cancelled flow run) the whole group gets SIGTERM at once, so
    the stage unwinds (temp files removed, workers stopped) instead of going on alone."""
    cmd = [sys.executable, "-m", module, *args]
    env = env or stage_env()
    stdout = subprocess.PIPE
    stderr = subprocess.STDOUT if stream else subprocess.PIPE
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=_dies_with_parent,
    )
    try:
        if not stream:
            out, err = proc.communicate()
            return proc.returncode, out if proc.returncode == 0 else out + err
        assert proc.stdout is not None
        log, lines = _log(), []
        for line in proc.stdout:
            lines.append(line)
            if line.strip() and not GIT_HINT.match(line):
                log.info(line.rstrip())
        return proc.wait(), "".join(lines)
    except BaseException:
        _stop_group(proc)
        raise


def _retry_transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, StageFailed) and exc.transient


# --- tasks -----------------------------------------------------------------------------------------
@task(name="dvc status", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_transient, cache_policy=NO_CACHE)
def stale_stages(workspace: str) -> dict[str, Any]:
    """Ask DVC what is stale: ``dvc status --json`` -> {stage: [what changed]} (empty = up to date)."""
    code, out = dvc(Path(workspace), "status", "--json")
    if code != 0:
        raise StageFailed("dvc status", code, error_lines(out))
    return json.loads(out) if out.strip() else {}


@task(name="dvc dag", cache_policy=NO_CACHE)
def stage_dag(workspace: str) -> Dag:
    code, out = dvc(Path(workspace), "dag", "--dot")
    if code != 0:
        raise StageFailed("dvc dag", code, error_lines(out))
    return parse_dot(out)


@task(
    name="stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=30,
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def run_stage(workspace: str, stage: str, dask_address: str = "") -> str:
    """``dvc repro --single-item <stage>``, its output streamed to the run log.

    Returns "ran", "cached" (restored from DVC's run-cache) or "unchanged" (DVC found its inputs
    unchanged after the upstream stages ran). A failure raises :class:`StageFailed` with the
    stage's own error lines; only transient causes are retried."""
    code, out = dvc(Path(workspace), "repro", "--single-item", stage, stream=True, env=stage_env(dask_address))
    if code != 0:
        raise StageFailed(stage, code, error_lines(out))
    if "is cached - skipping run" in out:
        return "cached"
    return "ran" if "Running stage" in out else "unchanged"


@task(name="publish", cache_policy=NO_CACHE)
def publish(workspace: str, outcomes: dict[str, str], reason: str, run_name: str) -> dict[str, Any]:
    """Markdown artifact (what ran, what changed since the previous successful run, the report summary)
    and a table artifact of per-model test metrics; then remember this run as the last success."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from pipeline.core.files import write_json

    root = Path(workspace)
    now = snapshot(root)
    last_path = state_dir(root) / SNAPSHOT
    last = json.loads(last_path.read_text()) if last_path.exists() else None
    since = f"flow run {last['run']} at {last['finished']}" if last else ""
    summary = root / "reports" / "summary.md"
    md = [
        f"# Driver pipeline: {run_name}\n",
        f"Trigger: {reason}\n",
        "| stage | outcome |",
        "|---|---|",
        *[f"| `{s}` | {o} |" for s, o in outcomes.items()],
        "\n## What changed\n",
        diff_markdown(last, now, since),
        "\n---\n",
        summary.read_text() if summary.exists() else "_reports/summary.md was not produced by this pipeline._",
    ]
    markdown = "\n".join(md)
    create_markdown_artifact(markdown=markdown, key="driver-pipeline-summary", description="Report summary and diff")
    table = metrics_table(now)
    if table:
        create_table_artifact(table=table, key="driver-pipeline-metrics", description="Per-model CV metrics")
    write_json(last_path, {**now, "run": run_name, "finished": datetime.now(UTC).isoformat(timespec="seconds")})
    return {"markdown": markdown, "table": table}


# --- the flow ----------------------------------------------------------------------------------------
def _run_name() -> str:
    try:
        from prefect.runtime import flow_run

        return flow_run.name or "local"
    except Exception:  # pragma: no cover - outside a run
        return "local"


@flow(name="driver-pipeline", log_prints=True)
def driver_pipeline(
    workspace: str = ".", reason: str = "manual", dask_address: str = "", lock_wait_s: float = 1800.0
) -> Any:
    """Bring the DVC pipeline in ``workspace`` up to date and publish the evaluation summary.

    Args:
        workspace: the project folder (holds dvc.yaml and params.yaml).
        reason: why this run started (the trigger fills it in: schedule, changed files, manual).
        dask_address: a Dask scheduler for the per-video work of frames/landmarks ("" = local pool).
        lock_wait_s: how long to wait for another run on this workspace before skipping.
    """
    log = get_run_logger()
    root = Path(workspace).resolve()
    if not (root / "dvc.yaml").exists():
        raise FileNotFoundError(f"{root} has no dvc.yaml: pass the project folder as the workspace parameter")
    run_name = _run_name()
    log.info("workspace %s; trigger: %s", root, reason)
    with workspace_lock(root, who=f"flow run {run_name}", wait_s=lock_wait_s, log=log.warning) as acquired:
        if not acquired:
            return Completed(
                name="Skipped", message="another pipeline run holds the workspace lock", data={"status": "skipped"}
            )
        stale = stale_stages(str(root))
        if not stale:
            log.info("Data and pipelines are up to date: nothing to run.")
            return {"status": "up to date", "stages": {}}
        dag = stage_dag(str(root))
        todo = plan(stale, dag)
        log.info("stale: %s -> running %d stages in DAG order: %s", ", ".join(stale), len(todo), ", ".join(todo))
        outcomes: dict[str, str] = {}
        failed: dict[str, str] = {}
        blocked: set[str] = set()
        for stage in todo:  # like `dvc repro --keep-going`: a failure stops its downstream, not the rest
            if stage in blocked:
                outcomes[stage] = "not run (upstream failed)"
                continue
            if inputs_unchanged(stage, stale, dag, outcomes):
                outcomes[stage] = "unchanged"
                log.info("%s: not stale, and no stage it depends on changed anything: skipped", stage)
                continue
            state = run_stage(str(root), stage, dask_address, return_state=True)
            if state.is_completed():
                outcomes[stage] = state.result()
                continue
            failed[stage] = str(state.result(raise_on_failure=False))
            outcomes[stage] = "failed"
            blocked |= downstream([stage], dag) - {stage}
            log.error("%s -- its downstream stages will not run; independent stages go on", failed[stage])
        if failed:
            raise PipelineFailed(
                f"{len(failed)} stage(s) failed: "
                + " || ".join(failed.values())
                + ". Fix the cause and run again: DVC keeps every stage that succeeded, the next run starts there."
            )
        publish(str(root), outcomes, reason, run_name)
        counts = {o: sum(v == o for v in outcomes.values()) for o in ("ran", "cached", "unchanged")}
        log.info("done: %(ran)d stages ran, %(cached)d restored from DVC's cache, %(unchanged)d unchanged", counts)
        return {"status": "ran", "stages": outcomes}
