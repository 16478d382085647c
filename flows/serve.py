"""One command for a local, always-on pipeline: Prefect server + served deployment + watcher.

``make serve`` (= ``python -m flows serve``) starts, in this order:

1. a Prefect server on 127.0.0.1 (analytics off), or reuses a healthy one already on the port;
2. the file watcher (``python -m flows watch``) that emits an event when the raw folder or
   params.yaml changes;
3. the deployment ``driver-pipeline/driver-pipeline`` served from this process: a cron
   schedule (params ``schedule.cron``) and an event trigger on the watcher's event, at most
   one run at a time (further runs queue), and the workspace lock inside the flow.

Ctrl-C stops all three.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.pipeline_flow import EVENT, workspace_resource

log = logging.getLogger("flows.serve")
DEPLOYMENT = "driver-pipeline"


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True if a Prefect API answers on ``url``."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def server_env() -> dict[str, str]:
    return {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}


def start_server(port: int, timeout_s: float = 120.0) -> subprocess.Popen | None:
    """Start ``prefect server start`` on 127.0.0.1:port; None if a healthy server is already there."""
    url = api_url(port)
    if healthy(url):
        log.info("reusing the Prefect server already answering on %s", url)
        return None
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([*cmd, "--analytics-off"], env=server_env())
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {proc.returncode}: is port {port} taken? Try --port")
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"the Prefect server did not answer on {url} within {timeout_s:g} s")
        time.sleep(0.5)
    log.info("Prefect server up: UI http://127.0.0.1:%d, API %s", port, url)
    return proc


def deployment_trigger(root: Path):
    """The event trigger: the watcher's event for THIS workspace starts a run with the reason filled in."""
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name="raw data or params changed",
        expect={EVENT},
        match={"prefect.resource.id": workspace_resource(root)["prefect.resource.id"]},
        parameters={"workspace": str(root), "reason": "{{ event.payload.reason }}"},
    )


def deployment_kwargs(root: Path, cron: str, timezone: str) -> dict:
    """Everything the served deployment is made of (shared by ``serve`` and the tests)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    return {
        "name": DEPLOYMENT,
        "schedules": [Cron(cron, timezone=timezone, parameters={"reason": f"schedule ({cron} {timezone})"})],
        "triggers": [deployment_trigger(root)],
        "parameters": {"workspace": str(root)},
        "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        "description": f"dvc repro of {root} on schedule and on change of its raw data or params",
        "tags": ["driver-pipeline"],
    }


def serve(root: Path, port: int = 4200, cron: str | None = None, watch: bool = True) -> None:
    """Start server, watcher and the served deployment; block until interrupted."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline_flow import driver_pipeline
    from pipeline.config import load_params

    root = Path(root).resolve()
    sched = load_params(root / "params.yaml").schedule
    server = start_server(port)
    env = {**server_env(), "PREFECT_API_URL": api_url(port)}
    watcher = None
    try:
        if watch:
            watcher = subprocess.Popen([sys.executable, "-m", "flows", "watch", "--workspace", str(root)], env=env)
        kwargs = deployment_kwargs(root, cron or sched.cron, sched.timezone)
        limit = kwargs.pop("concurrency_limit")
        with temporary_settings(updates={PREFECT_API_URL: api_url(port)}):
            driver_pipeline.serve(**kwargs, global_limit=limit, limit=1)
    finally:
        for proc in (watcher, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
