"""python -m flows {run,serve,inbox,watch}: the Prefect side of the pipeline (README "Scheduling and triggers")."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Prefect flows that drive the DVC pipeline.",
)
Workspace = Annotated[Path, typer.Option("--workspace", help="project folder holding dvc.yaml and params.yaml")]
EPHEMERAL_WAIT = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"  # Prefect's wait for a temporary server


@app.command()
def run(
    workspace: Workspace = Path("."),
    reason: Annotated[str, typer.Option(help="why this run (shown in the artifact)")] = "manual",
    dask_address: Annotated[str, typer.Option(help="Dask scheduler for frames/landmarks")] = "",
) -> None:
    """One flow run now: dvc status, the stale stages as tasks, artifacts. Uses $PREFECT_API_URL
    (without it Prefect starts a temporary local server for the run)."""
    # The temporary server's telemetry service races its own start-up for the SQLite file
    # ("database is locked" traceback); we send no telemetry anyway. Read when prefect loads.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh Prefect home migrates its database first: on a busy machine that outlasts Prefect's
    # default 20-s wait for the temporary server ("Timed out while attempting to connect").
    os.environ.setdefault(EPHEMERAL_WAIT, "180")
    from flows.pipeline_flow import driver_pipeline
    from pipeline.core.config import load_params

    root = workspace.resolve()
    wait = load_params(root / "params.yaml").schedule.lock_wait_s
    state = driver_pipeline(str(root), reason, dask_address, wait, return_state=True)
    if not state.is_completed():
        typer.echo(f"flow run {state.name}: {state.message}", err=True)
        raise typer.Exit(1)
    typer.echo(f"flow run {state.name}: {state.result()}")


@app.command()
def serve(
    workspace: Workspace = Path("."),
    port: Annotated[int, typer.Option(help="Prefect server port on 127.0.0.1")] = 4200,
    cron: Annotated[str | None, typer.Option(help="override params schedule.cron")] = None,
    watch: Annotated[bool, typer.Option(help="also start the file watcher")] = True,
    inbox: Annotated[bool, typer.Option(help="also serve the inbox deployment (scores new videos)")] = False,
) -> None:
    """Local Prefect server (127.0.0.1, analytics off) + the deployment (cron + event trigger) + the watcher
    (+ with --inbox the inbox scorer)."""
    from flows.serve import serve as _serve

    try:
        _serve(workspace, port=port, cron=cron, watch=watch, inbox=inbox)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command(hidden=True)
def deployment(
    workspace: Workspace = Path("."),
    cron: Annotated[str | None, typer.Option(help="override params schedule.cron")] = None,
) -> None:
    """Serve the deployment from this process (started by `serve`; needs $PREFECT_API_URL)."""
    from flows.serve import serve_deployment

    serve_deployment(workspace, cron=cron)


@app.command(hidden=True, name="inbox-deployment")
def inbox_deployment(workspace: Workspace = Path(".")) -> None:
    """Serve the inbox deployment from this process (started by `serve --inbox`; needs $PREFECT_API_URL)."""
    from flows.serve import serve_inbox_deployment

    serve_inbox_deployment(workspace)


@app.command()
def inbox(
    workspace: Workspace = Path("."),
    model: Annotated[str, typer.Option(help="a trained model's name ('' = the report's recommendation)")] = "",
) -> None:
    """One inbox run now: score the new videos in params schedule.inbox (uses $PREFECT_API_URL, or a
    temporary server)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault(EPHEMERAL_WAIT, "180")  # as in `run`
    from flows.inbox_flow import score_inbox
    from pipeline.core.config import load_params

    root = workspace.resolve()
    s = load_params(root / "params.yaml").schedule
    state = score_inbox(
        str(root), s.inbox, s.inbox_out, model, s.inbox_mode, s.settle_s, s.lock_wait_s, return_state=True
    )
    if not state.is_completed():
        typer.echo(f"flow run {state.name}: {state.message}", err=True)
        raise typer.Exit(1)
    typer.echo(f"flow run {state.name}: {state.result()}")


@app.command()
def watch(workspace: Workspace = Path(".")) -> None:
    """Emit a Prefect event whenever the raw folder or params.yaml changes (needs $PREFECT_API_URL)."""
    from flows.watch import watch as _watch
    from pipeline.core.config import load_params

    root = workspace.resolve()
    sched = load_params(root / "params.yaml").schedule
    with contextlib.suppress(KeyboardInterrupt):
        _watch(root, interval_s=sched.watch_interval_s, settle_s=sched.settle_s)


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough: let the shutdown finish
    raise KeyboardInterrupt


def main() -> None:
    # Ctrl-C must work even when a shell started us as a background job (SIGINT ignored, and
    # inherited by every child: `serve` stops its deployment with SIGINT), as the stages do
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGTERM takes Ctrl-C's path: the run's stage group is stopped AND the temporary Prefect server
    # `run` may have started is stopped at exit. Killed by the signal's default action instead, this
    # process left that server running, an orphan holding the terminal's output open.
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    app()


if __name__ == "__main__":
    main()
