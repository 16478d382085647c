"""One command for a local, always-on pipeline: Prefect server + served deployment + watcher.

``make serve`` (= ``python -m flows serve``) starts, in this order:

1. a Prefect server on 127.0.0.1 (analytics off), or reuses a healthy one already on the port;
2. the deployment ``driver-pipeline/driver-pipeline`` served by ``python -m flows deployment``:
   a cron schedule (params ``schedule.cron``) and an event trigger on the watcher's event, at
   most one run at a time (further runs queue), and the workspace lock inside the flow; with
   ``--inbox`` (``make serve INBOX=1``) also ``driver-inbox/driver-inbox`` (flows/inbox_flow.py,
   ``python -m flows inbox-deployment``): new videos in ``schedule.inbox`` scored every
   ``schedule.inbox_every_s`` seconds, under the same lock;
3. the file watcher (``python -m flows watch``) that emits an event when the raw folder or
   params.yaml changes.

Ctrl-C or SIGTERM first cancels a pipeline run in progress (through the API: the deployment's
runner stops the flow run, whose stage process group gets SIGTERM, so the stage unwinds and
nothing half-written keeps a real name; the run ends as Cancelled), then stops the deployment
(its schedule is paused), the watcher and the server, and leaves no process behind. The
children run in their own sessions, so a terminal's Ctrl-C reaches only this supervisor, which
stops them in that order. The exit of any one child stops the rest the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from flows.pipeline_flow import EVENT, workspace_resource

if TYPE_CHECKING:
    from pipeline.core.config import ScheduleParams

log = logging.getLogger("flows.serve")
DEPLOYMENT = "driver-pipeline"
TRIGGER = "raw data or params changed"  # the name of the deployment's trigger, and of its automation


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
    proc = subprocess.Popen([*cmd, "--analytics-off"], env=server_env(), start_new_session=True)
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
        name=TRIGGER,
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


def inbox_kwargs(root: Path, sched: ScheduleParams) -> dict:
    """The inbox deployment: new videos in ``schedule.inbox`` scored every ``schedule.inbox_every_s``."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Interval

    return {
        "name": INBOX_DEPLOYMENT,
        "schedules": [Interval(timedelta(seconds=sched.inbox_every_s))],
        "parameters": {
            "workspace": str(root),
            "inbox": sched.inbox,
            "out": sched.inbox_out,
            "mode": sched.inbox_mode,
            "settle_s": sched.settle_s,
            "lock_wait_s": min(sched.lock_wait_s, 60.0),  # busy: skip, the next interval tries again
        },
        "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        "description": f"score new videos in {root / sched.inbox} with the recommended model",
        "tags": ["driver-pipeline"],
    }


def serve_deployment(root: Path, cron: str | None = None) -> None:
    """Serve the pipeline deployment from this process until interrupted (``python -m flows deployment``);
    needs PREFECT_API_URL. ``serve`` runs it as a child process."""
    from flows.pipeline_flow import driver_pipeline
    from pipeline.core.config import load_params

    root = Path(root).resolve()
    sched = load_params(root / "params.yaml").schedule
    kwargs = deployment_kwargs(root, cron or sched.cron, sched.timezone)
    limit = kwargs.pop("concurrency_limit")
    driver_pipeline.serve(**kwargs, global_limit=limit, limit=1)


def serve_inbox_deployment(root: Path) -> None:
    """Serve the inbox deployment from this process until interrupted (``python -m flows inbox-deployment``);
    needs PREFECT_API_URL. ``serve --inbox`` runs it as a child process beside the pipeline's."""
    from flows.inbox_flow import score_inbox
    from pipeline.core.config import load_params

    root = Path(root).resolve()
    sched = load_params(root / "params.yaml").schedule
    (root / sched.inbox).mkdir(parents=True, exist_ok=True)
    kwargs = inbox_kwargs(root, sched)
    limit = kwargs.pop("concurrency_limit")
    score_inbox.serve(**kwargs, global_limit=limit, limit=1)


def _triggers(client) -> list:
    """The server's automations made from a trigger of this name (any workspace's)."""
    from prefect.events.filters import AutomationFilter, AutomationFilterName

    return client.read_automations(automations=AutomationFilter(name=AutomationFilterName(any_=[TRIGGER])))


def automation_ids(url: str) -> set:
    """Ids of the change-trigger automations the server holds (before the deployment replaces its own)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return {a.id for a in _triggers(client)}


def wait_for_trigger(url: str, root: Path, known: set, deployment: subprocess.Popen, timeout_s: float = 180) -> None:
    """Wait until the served deployment has created its event trigger for ``root`` (an automation not in
    ``known``). The deployment is registered before its trigger: an event sent in between starts nothing."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    resource = workspace_resource(root)["prefect.resource.id"]
    deadline = time.monotonic() + timeout_s
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if deployment.poll() is not None:
                raise RuntimeError(f"the deployment process exited with {deployment.returncode}; stopping the rest")
            for a in _triggers(client):
                if a.id not in known and resource in str(getattr(a.trigger, "match", "")):
                    time.sleep(1.0)  # the server loads a new automation into its trigger cache just after commit
                    log.info("deployment %s and its change trigger are ready", DEPLOYMENT)
                    return
            time.sleep(0.5)
    raise RuntimeError(f"the deployment's change trigger did not appear on {url} within {timeout_s:g} s")


def _stop(proc: subprocess.Popen, sig: int, grace_s: float) -> None:
    """Stop a child started in its own session, then anything left in its process group."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # grandchildren that outlived it (e.g. a flow-run process)


INBOX_DEPLOYMENT = "driver-inbox"
ACTIVE = ("RUNNING", "PENDING", "CANCELLING")


def cancel_active_runs(url: str, wait_s: float = 90.0) -> list[str]:
    """Cancel this deployment's runs in progress and wait until they end; returns one line per run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Cancelling

    lines: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        only_ours = DeploymentFilter(name=DeploymentFilterName(any_=[DEPLOYMENT, INBOX_DEPLOYMENT]))
        runs = [r for r in client.read_flow_runs(deployment_filter=only_ours) if r.state_type.value in ACTIVE]
        for r in runs:
            log.info("cancelling flow run %s (%s)", r.name, r.state_name)
            client.set_flow_run_state(r.id, Cancelling(message="make serve is stopping"), force=True)
        deadline = time.monotonic() + wait_s
        for r in runs:
            state = client.read_flow_run(r.id).state
            while state is not None and state.type.value in ACTIVE and time.monotonic() < deadline:
                time.sleep(0.5)
                state = client.read_flow_run(r.id).state
            lines.append(f"flow run {r.name}: {state.name if state else 'unknown'}")
            log.info(lines[-1])
    return lines


def serve(root: Path, port: int = 4200, cron: str | None = None, watch: bool = True, inbox: bool = False) -> None:
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
        known = automation_ids(api_url(port)) if watch else set()
        children["deployment"] = subprocess.Popen(
            [*py, "deployment", "--workspace", str(root), *(["--cron", cron] if cron else [])],
            env=env,
            start_new_session=True,
        )
        if watch:  # a change seen before the trigger exists would start nothing: the watcher waits for it
            wait_for_trigger(api_url(port), root, known, children["deployment"])
        if inbox:
            children["inbox"] = subprocess.Popen(
                [*py, "inbox-deployment", "--workspace", str(root)], env=env, start_new_session=True
            )
        if watch:
            children["watcher"] = subprocess.Popen(
                [*py, "watch", "--workspace", str(root)], env=env, start_new_session=True
            )
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"the {name} process exited with {proc.returncode}; stopping the rest")
            if server is not None and server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with {server.returncode}; stopping the rest")
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping: runs in progress, deployment (its schedule is paused), watcher, server")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        if "deployment" in children and children["deployment"].poll() is None and healthy(api_url(port)):
            try:
                cancel_active_runs(api_url(port))
            except Exception as exc:  # the server is unwell: the process-group kill below still stops the run
                log.warning("could not cancel runs in progress through the API: %s", exc)
        for name in ("deployment", "inbox"):  # first, while the server is up: each pauses its deployment
            if name in children:
                _stop(children[name], signal.SIGINT, 60)
        if "watcher" in children:
            _stop(children["watcher"], signal.SIGTERM, 10)
        if server is not None:
            _stop(server, signal.SIGTERM, 30)
