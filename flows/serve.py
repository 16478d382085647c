"""One command for a local, always-on pipeline: Prefect server + served deployment + watcher.

``make serve`` (= ``python -m flows serve``) starts, in this order:

1. a Prefect server on 127.0.0.1 (analytics off), or reuses a healthy one already on the port;
2. the deployment ``driver-pipeline/driver-pipeline`` served by ``python -m flows deployment``:
   a cron schedule (params ``schedule.cron``) and an event trigger on the watcher's event, at
   most one run at a time (further runs queue), and the workspace lock inside the flow;
3. the file watcher (``python -m flows watch``) that emits an event when the raw folder or
   params.yaml changes.

Ctrl-C or SIGTERM stops all three (the deployment first, so its schedule is paused), and so
does the exit of any one of them.
"""

from __future__ import annotations

import logging
import os
import signal
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


def serve_deployment(root: Path, cron: str | None = None) -> None:
    """Serve the deployment from this process until interrupted (``python -m flows deployment``);
    needs PREFECT_API_URL. ``serve`` runs it as a child process."""
    from pipeline.core.config import load_params

    from flows.pipeline_flow import driver_pipeline

    root = Path(root).resolve()
    sched = load_params(root / "params.yaml").schedule
    kwargs = deployment_kwargs(root, cron or sched.cron, sched.timezone)
    limit = kwargs.pop("concurrency_limit")
    driver_pipeline.serve(**kwargs, global_limit=limit, limit=1)


def _stop(proc: subprocess.Popen, sig: int, grace_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(root: Path, port: int = 4200, cron: str | None = None, watch: bool = True) -> None:
    """Start server, deployment and watcher as child processes; stop them all on Ctrl-C or SIGTERM,
    or as soon as one of them exits (its exit code is reported)."""
    root = Path(root).resolve()
    server = start_server(port)
    env = {**server_env(), "PREFECT_API_URL": api_url(port)}
    py = [sys.executable, "-m", "flows"]
    children: dict[str, subprocess.Popen] = {}

    def on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: a clean shutdown
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        children["deployment"] = subprocess.Popen(
            [*py, "deployment", "--workspace", str(root), *(["--cron", cron] if cron else [])], env=env
        )
        if watch:
            children["watcher"] = subprocess.Popen([*py, "watch", "--workspace", str(root)], env=env)
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"the {name} process exited with {proc.returncode}; stopping the rest")
            if server is not None and server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {server.returncode}; stopping the rest")
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping: deployment (its schedule is paused), watcher, server")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if "deployment" in children:  # first, while the server is up: it pauses its deployment
            _stop(children["deployment"], signal.SIGINT, 60)
        if "watcher" in children:
            _stop(children["watcher"], signal.SIGTERM, 10)
        if server is not None:
            _stop(server, signal.SIGTERM, 30)
