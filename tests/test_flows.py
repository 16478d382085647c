"""Prefect flows that drive DVC: planning on the real DVC DAG, the workspace lock, the watcher, and runs
against a real Prefect server (ONE session-scoped ``prefect_test_harness``, see conftest)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows import watch as fw
from flows.lock import workspace_lock
from flows.pipeline_flow import (
    Dag,
    StageFailed,
    _retry_transient,
    diff_markdown,
    downstream,
    driver_pipeline,
    error_lines,
    inputs_unchanged,
    parse_dot,
    plan,
    run_stage,
    stage_dag,
    stage_env,
    stale_stages,
    workspace_resource,
)
from tests.conftest import ROOT, dvc_env, make_workspace, migrated_prefect_home, read_params, write_params

pytestmark = pytest.mark.under_load  # beside busy processes in CI (tests/conftest.py cpu_load)


# --- task logic and pure helpers (no server) ----------------------------------------------------
def test_plan_follows_the_real_dvc_dag():
    dag = stage_dag.fn(str(ROOT))  # real `dvc dag --dot` of this project
    models = read_params(ROOT)["train"]["models"]
    assert dag.stages[:7] == ("check", "demo", "frames", "landmarks", "features", "windows", "validate")
    assert plan([], dag) == []
    assert plan(["check", "windows"], dag)[0] == "check"  # the params check runs first (dvc.yaml order)
    assert plan(["train@gru"], dag) == ["train@gru", "evaluate@gru", "report"]
    todo = plan(["windows"], dag)
    assert todo[:2] == ["windows", "validate"] and todo[-1] == "report" and "demo" not in todo
    assert set(todo) == {"windows", "validate", "report", *(f"{s}@{m}" for s in ("train", "evaluate") for m in models)}
    for a, b in dag.edges:  # every dependency DVC knows is respected
        if a in todo and b in todo:
            assert todo.index(a) < todo.index(b), (a, b)


def test_parse_dot_plan_and_downstream_on_a_small_graph():
    dag = parse_dot('strict digraph {\n"a";\n"b";\n"c";\n"d";\n"a" -> "b";\n"b" -> "c";\n}\n')
    assert dag == Dag(("a", "b", "c", "d"), (("a", "b"), ("b", "c")))
    assert downstream(["b"], dag) == {"b", "c"}
    assert plan(["d", "a"], dag) == ["a", "b", "c", "d"]
    assert plan(["c"], dag) == ["c"]


def test_a_stage_whose_upstream_left_everything_unchanged_is_not_asked_again():
    dag = parse_dot('"a";\n"b";\n"c";\n"a" -> "b";\n"b" -> "c";\n')
    assert not inputs_unchanged("b", ["a"], dag, {"a": "ran"})  # a ran: DVC must look at b
    assert inputs_unchanged("c", ["a"], dag, {"a": "ran", "b": "unchanged"})
    assert not inputs_unchanged("c", ["a", "c"], dag, {"a": "ran", "b": "unchanged"})  # c itself stale
    assert not inputs_unchanged("c", ["a"], dag, {"a": "ran", "b": "cached"})  # restored outputs may differ
    assert not inputs_unchanged("a", ["b"], dag, {})  # nothing upstream visited


def test_error_lines_keep_what_a_person_needs():
    out = (
        "Running stage 'train@gru':\n> python -m pipeline.cli train --model gru\nTraceback (most recent call last):\n"
        "  File \"x.py\", line 1\nTypeError: model 'gru': __init__() got an unexpected keyword argument 'bogus'\n"
        "ERROR: failed to reproduce 'train@gru': failed to run: python -m pipeline.cli train, exited with 1\n"
    )
    msg = error_lines(out)
    assert "unexpected keyword argument 'bogus'" in msg and "ERROR: failed to reproduce 'train@gru'" in msg
    assert "Running stage" not in msg and "Traceback" not in msg
    assert error_lines("one line only\n") == "one line only"


def test_stage_env_puts_this_python_first_and_passes_a_dask_address():
    from pipeline.core.parallel import ENV_ADDRESS

    env = stage_env("tcp://10.0.0.5:8786")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env[ENV_ADDRESS] == "tcp://10.0.0.5:8786" and env["DVC_NO_ANALYTICS"] == "1"
    assert ENV_ADDRESS not in stage_env("") or os.environ.get(ENV_ADDRESS)


def test_only_transient_failures_are_retried():
    from prefect.states import Failed

    lock = StageFailed("frames", 255, "ERROR: Unable to acquire lock. Most likely another DVC process is running")
    killed = StageFailed("landmarks", 255, "ERROR: failed to run: python -m pipeline.cli landmarks, exited with -9")
    gate = StageFailed("validate", 1, "error: validation FAILED: expect_column_values_to_not_be_null on windows")
    assert lock.transient and killed.transient and not gate.transient
    assert _retry_transient(run_stage, None, Failed(data=lock))
    assert not _retry_transient(run_stage, None, Failed(data=gate))
    assert not _retry_transient(run_stage, None, Failed(data=ValueError("x")))


def test_diff_markdown_names_changed_params_and_metrics():
    before = {
        "params": {"hparams.gru.hidden": 8, "train.epochs": 3},
        "models": ["gru"],
        "metrics": {"gru": {"parameters": 564, "cv.macro_f1": 0.5, "cv.per_class.yawn.f1": 0.1}},
    }
    now = {
        "params": {"hparams.gru.hidden": 12, "train.epochs": 3},
        "models": ["gru"],
        "metrics": {"gru": {"parameters": 900, "cv.macro_f1": 0.75, "cv.per_class.yawn.f1": 0.2}},
    }
    md = diff_markdown(before, now, "flow run x")
    assert "(flow run x)" in md
    assert "| `hparams.gru.hidden` | 8 | 12 |" in md and "train.epochs" not in md
    assert "| `gru` | cv.macro_f1 | 0.5 | 0.75 | +0.25 |" in md
    assert md.index("cv.macro_f1 |") < md.index("parameters |")  # headline order, not alphabetical
    assert "1 other metric values changed" in md
    assert "nothing to compare" in diff_markdown(None, now)
    same = diff_markdown(now, now)
    assert "**Params**: unchanged." in same and "**Headline metrics**: unchanged." in same


@contextlib.contextmanager
def another_run_holding_the_lock(root: Path, who: str, release_after_s: float) -> Iterator[threading.Event]:
    """A thread standing in for another pipeline run: it takes the workspace lock, then lets go."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with workspace_lock(root, who, 0, lambda msg: None):
            held.set()
            release.wait(120)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(30)
    threading.Timer(release_after_s, release.set).start()
    try:
        yield release
    finally:
        release.set()
        t.join()


def test_workspace_lock_skips_or_waits(tmp_path):
    logs: list[str] = []
    with workspace_lock(tmp_path, "run A", 0, logs.append) as a:
        assert a
        with workspace_lock(tmp_path, "run B", 0, logs.append) as b:
            assert not b
    assert logs[-1].startswith("skipped: another pipeline run still holds the workspace lock") and "run A" in logs[-1]
    with (
        another_run_holding_the_lock(tmp_path, "run A", release_after_s=1.0) as released,
        workspace_lock(tmp_path, "run C", 60, logs.append, poll_s=0.1) as c,
    ):
        assert c and released.is_set()  # got it only after the first run let go
    assert any(line.startswith("waiting up to 60 s") and "run A" in line for line in logs)
    assert logs[-1] == "workspace lock acquired after waiting"


def test_watch_targets_leave_out_a_raw_folder_written_by_a_stage(tmp_path):
    work = make_workspace(tmp_path / "w")  # data.raw_dir = data/demo, the demo stage's output
    targets, notes = fw.watch_targets(work)
    assert targets == [work / "params.yaml"] and "written by a pipeline stage" in notes[0]
    params = read_params(work)
    params["data"]["raw_dir"] = "data/raw"
    write_params(work, params)
    assert fw.watch_targets(work) == ([work / "params.yaml", work / "data" / "raw"], [])


def test_watcher_reports_each_settled_batch_once(tmp_path):
    work = make_workspace(tmp_path / "w", edit=lambda p: p["data"].update(raw_dir="data/raw"))
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    seen: list[list[str]] = []
    stop, ready = threading.Event(), threading.Event()
    kwargs = {"interval_s": 0.1, "settle_s": 0.8, "stop": stop, "ready": ready}
    t = threading.Thread(target=fw.watch, args=(work,), kwargs={**kwargs, "on_change": lambda r, c: seen.append(c)})
    t.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        assert ready.wait(120)  # the watcher took its first snapshot (after a `dvc dag`: slow on a busy machine)
        (raw / "videos").mkdir()
        (raw / "videos" / "a.mp4").write_bytes(b"x" * 10)
        time.sleep(0.3)
        (raw / "videos" / "a.mp4").write_bytes(b"x" * 20)  # still being copied: same batch
        (raw / "labels.csv").write_text("video,subject,label\n")
        (raw / ".a.mp4.part.tmp").write_bytes(b"temp")  # hidden temp files are not inputs
        wait_for(1)
        params = read_params(work)
        params["data"]["raw_dir"] = "data/raw2"  # the raw folder moves: the watcher follows it
        write_params(work, params)
        wait_for(2)
        (work / "data" / "raw2").mkdir()
        (work / "data" / "raw2" / "labels.csv").write_text("video,subject,label\n")
        (raw / "labels.csv").write_text("no longer watched\n")
        wait_for(3)
        (work / "params.yaml").write_text("data: [not, a, mapping\n")  # broken params: reported, still watching
        wait_for(4)
    finally:
        stop.set()
        t.join()
    assert seen == [
        ["data/raw/labels.csv", "data/raw/videos/a.mp4"],
        ["params.yaml"],
        ["data/raw2/labels.csv"],
        ["params.yaml"],
    ]


# --- against a real Prefect server -----------------------------------------------------------------
def _client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def run_logs(flow_run_id) -> str:
    """Every log line Prefect stored for a flow run (its tasks included)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    lines, offset = [], 0
    with _client() as c:
        while True:
            page = c.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200, offset=offset)
            lines += [log.message for log in page]
            offset += len(page)
            if len(page) < 200:
                return "\n".join(lines)


def task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with _client() as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state_name for r in runs}


def artifact(flow_run_id, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with _client() as c:
        found = c.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    assert len(found) == 1, f"{key}: {len(found)} artifacts"
    return found[0].data


def wait_for_run(deployment_id, reason_prefix: str, timeout: float = 240):
    """The flow run an automation created for ``deployment_id`` with a reason starting ``reason_prefix``."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    with _client() as c:
        while time.monotonic() < deadline:
            runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
            hits = [r for r in runs if str(r.parameters.get("reason", "")).startswith(reason_prefix)]
            if hits:
                return hits
            time.sleep(0.5)
    raise AssertionError(f"no flow run with reason '{reason_prefix}...' for deployment {deployment_id}")


@pytest.mark.slow
def test_flow_runs_stale_stages_keeps_going_resumes_and_publishes(tmp_path, prefect_server, tiny_data):
    broken = {"hidden": 8, "bogus": 1}
    work = make_workspace(tmp_path / "w", edit=lambda p: p["hparams"].update(gru=broken))
    # 1. a stage fails: the run fails with the stage's own message; independent stages still ran
    state = driver_pipeline(workspace=str(work), reason="test: broken gru", return_state=True)
    assert state.is_failed()
    assert "stage 'check' failed" in state.message and "stage 'train@gru' failed" in state.message
    assert "'hparams.gru.bogus' is not a hyper-parameter of 'gru'" in state.message
    run1 = state.state_details.flow_run_id
    tasks = task_states(run1)
    assert tasks["train@gru"] == "Failed"
    assert all(tasks[s] == "Completed" for s in ("demo", "frames", "validate", "train@majority", "evaluate@stats_lr"))
    assert "evaluate@gru" not in tasks and "report" not in tasks  # downstream of the failure: not run
    logs = run_logs(run1)
    assert re.search(r"(Running stage|Stage) 'landmarks'", logs)  # each stage's dvc output is in the Prefect log
    assert "'hparams.gru.bogus' is not a hyper-parameter" in logs
    # 2. fixed: the next run starts from what DVC already has
    params = read_params(work)
    params["hparams"]["gru"] = {"hidden": 6}  # a value no other test's workspace trains (shared run-cache)
    write_params(work, params)
    state = driver_pipeline(workspace=str(work), reason="test: fixed", return_state=True)
    assert state.is_completed(), state.message
    ran = {"check": "ran", "train@gru": "ran", "evaluate@gru": "ran", "report": "ran"}
    assert state.result() == {"status": "ran", "stages": ran}
    run2 = state.state_details.flow_run_id
    md = artifact(run2, "driver-pipeline-summary")
    assert "Trigger: test: fixed" in md and "| `train@gru` | ran |" in md
    assert "nothing to compare with yet" in md and "# Driver-behaviour models: evaluation summary" in md
    rows = json.loads(artifact(run2, "driver-pipeline-metrics"))
    assert [r["model"] for r in rows] == ["majority", "stats_lr", "gru"]
    gru = json.loads((work / "reports" / "models" / "gru" / "metrics.json").read_text())
    assert rows[2]["cv.macro_f1"] == gru["cv"]["macro_f1"] and rows[2]["gap"] == gru["gap"]
    # 3. nothing changed: up to date, no stage task; a run arriving while another holds the lock waits
    assert stale_stages.fn(str(work)) == {}
    with another_run_holding_the_lock(work, "flow run other", release_after_s=2.0):
        state = driver_pipeline(workspace=str(work), reason="test: nothing changed", lock_wait_s=120, return_state=True)
    assert state.result() == {"status": "up to date", "stages": {}}
    run3 = state.state_details.flow_run_id
    assert [name.split("-")[0] for name in task_states(run3)] == ["dvc status"]
    logs = run_logs(run3)
    assert "waiting up to 120 s: another pipeline run holds the workspace lock: flow run other" in logs
    assert "Data and pipelines are up to date" in logs
    # 4. a param changes: only its stages run, and the artifact says what changed since the last success
    params["hparams"]["gru"] = {"hidden": 12}
    write_params(work, params)
    state = driver_pipeline(workspace=str(work), reason="test: wider gru", return_state=True)
    assert state.is_completed(), state.message
    md = artifact(state.state_details.flow_run_id, "driver-pipeline-summary")
    assert "Compared with the previous successful run (flow run " in md
    assert "| `hparams.gru.hidden` | 6 | 12 |" in md
    changed = md.split("## What changed")[1].split("\n---\n")[0]
    assert "| `gru` | parameters |" in changed and "`majority`" not in changed  # only what changed
    # task logic through .fn, outside any flow run
    assert run_stage.fn(str(work), "report") == "unchanged"


@pytest.mark.slow
def test_a_second_run_on_a_busy_workspace_is_skipped_with_a_log_line(tmp_path, prefect_server):
    work = make_workspace(tmp_path / "w")
    with workspace_lock(work, "flow run first", 0, lambda msg: None):
        state = driver_pipeline(workspace=str(work), reason="second trigger", lock_wait_s=0, return_state=True)
    assert state.is_completed() and state.name == "Skipped"
    assert state.result() == {"status": "skipped"}
    run = state.state_details.flow_run_id
    assert "skipped: another pipeline run still holds the workspace lock after 0 s: flow run first" in run_logs(run)
    assert task_states(run) == {}  # not even dvc status ran
    assert not (work / "dvc.lock").exists()


@pytest.mark.slow
def test_a_change_event_starts_a_run_of_the_served_deployment(tmp_path, prefect_server):
    from flows.serve import deployment_kwargs

    work = make_workspace(tmp_path / "w")
    kwargs = deployment_kwargs(work, "0 3 * * *", "UTC")
    kwargs["name"] = "event-path-test"
    deployment_id = driver_pipeline.to_deployment(**kwargs).apply()
    with _client() as c:
        dep = c.read_deployment(deployment_id)
    assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
    assert dep.global_concurrency_limit.limit == 1 and dep.concurrency_options.collision_strategy == "ENQUEUE"
    assert dep.parameters == {"workspace": str(work.resolve())}
    stop, ready = threading.Event(), threading.Event()
    opts = {"interval_s": 0.2, "settle_s": 0.5, "stop": stop, "ready": ready}
    t = threading.Thread(target=fw.watch, args=(work,), kwargs=opts)
    t.start()  # the real watcher, emitting real events
    try:
        # its first snapshot comes after a `dvc dag` (seconds on a busy machine): a change before it
        # is the starting state, not a change (CI once lost this race with a fixed 1.5 s sleep)
        assert ready.wait(120)
        params = read_params(work)
        params["train"]["epochs"] = 4
        write_params(work, params)
        runs = wait_for_run(deployment_id, "inputs changed")
    finally:
        stop.set()
        t.join()
    assert len(runs) == 1
    assert runs[0].parameters == {"workspace": str(work.resolve()), "reason": "inputs changed: params.yaml"}


@pytest.mark.slow
def test_prefect_yaml_deploys_to_a_work_pool_and_its_trigger_fires(tmp_path, prefect_server):
    from prefect.client.schemas.actions import WorkPoolCreate

    work = make_workspace(tmp_path / "w")
    shutil.copy(ROOT / "prefect.yaml", work / "prefect.yaml")
    shutil.copytree(ROOT / "flows", work / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"][0]
    assert spec["schedules"][0]["cron"] == read_params(ROOT)["schedule"]["cron"]  # the two schedules agree
    with _client() as c:
        c.create_work_pool(WorkPoolCreate(name=spec["work_pool"]["name"], type="process"))
    env = {**dvc_env(), "PREFECT_API_URL": prefect_server, "PWD": str(work)}  # as from a shell in the project
    res = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with _client() as c:
        dep = c.read_deployment_by_name("driver-pipeline/driver-pipeline")
    assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(work)}}]
    assert dep.work_pool_name == "driver-pipeline" and dep.global_concurrency_limit.limit == 1
    from flows.watch import emit_change

    emit_change(work, ["data/raw/videos/new.mp4"])
    runs = wait_for_run(dep.id, "inputs changed: data/raw/videos/new.mp4")
    assert runs[0].parameters["workspace"] == workspace_resource(work)["prefect.resource.name"] == str(work.resolve())


def empty_dvc_project(work: Path) -> Path:
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, check=True, env=dvc_env())
    return work


def toy_workspace(work: Path) -> Path:
    """A one-stage DVC project (the flow is generic over DVC pipelines): ``toy`` writes train.epochs
    to out.txt, fails with a clear message when it is 3, and when it is 5 writes its pid to
    started.txt and takes two minutes (to be stopped)."""
    empty_dvc_project(work)
    write_params(
        work, {"schedule": {"cron": "0 3 * * *", "watch_interval_s": 0.2, "settle_s": 0.5}, "train": {"epochs": 1}}
    )
    stage = (
        "import os, sys, time, yaml; e = yaml.safe_load(open('params.yaml'))['train']['epochs']; "
        "sys.exit('error: the toy stage refuses 3 epochs') if e == 3 else None; "
        "open('started.txt', 'w').write(str(os.getpid())) if e == 5 else None; "
        "time.sleep(120) if e == 5 else None; "
        "open('out.txt', 'w').write(str(e))"
    )
    dvc_yaml = {"stages": {"toy": {"cmd": f'python -c "{stage}"', "params": ["train.epochs"], "outs": ["out.txt"]}}}
    (work / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    return work


@pytest.mark.slow
def test_flows_run_cli_reports_ran_up_to_date_and_failure(tmp_path, prefect_server):
    work = toy_workspace(tmp_path / "w")
    env = {**dvc_env(), "PREFECT_API_URL": prefect_server}

    def flows_run() -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "flows", "run", "--workspace", str(work), "--reason", "cli test"]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    res = flows_run()
    assert res.returncode == 0 and "{'status': 'ran', 'stages': {'toy': 'ran'}}" in res.stdout, res.stderr[-2000:]
    assert (work / "out.txt").read_text() == "1"
    res = flows_run()
    assert res.returncode == 0 and "'status': 'up to date'" in res.stdout
    write_params(work, {**read_params(work), "train": {"epochs": 3}})
    res = flows_run()
    assert res.returncode == 1
    assert "stage 'toy' failed (exit 255): error: the toy stage refuses 3 epochs" in res.stderr
    write_params(work, {**read_params(work), "train": {"epochs": 1}})  # back: DVC's run-cache has that
    res = flows_run()
    assert res.returncode == 0 and "{'status': 'ran', 'stages': {'toy': 'cached'}}" in res.stdout, res.stdout
    assert (work / "out.txt").read_text() == "1"


@pytest.mark.slow
def test_make_flow_on_a_temporary_server_prints_no_library_traceback(tmp_path):
    """`make flow` as a newcomer runs it: no PREFECT_API_URL (Prefect starts a temporary server)
    and no Prefect settings of ours in the environment."""
    work = toy_workspace(tmp_path / "w")
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # its own SQLite file, not the harness's
    cmd = [sys.executable, "-m", "flows", "run", "--workspace", str(work)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "'status': 'ran'" in res.stdout, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "database is locked" not in res.stderr, res.stderr[-3000:]
    # a fresh home migrates its database first: the temporary server gets 180 s, not Prefect's 20 (the
    # variable `flows run` sets must be the one this Prefect reads)
    from flows.__main__ import EPHEMERAL_WAIT

    code = "from prefect.settings import get_current_settings as g; print(g().server.ephemeral.startup_timeout_seconds)"
    wait = {**env, EPHEMERAL_WAIT: "180"}
    res = subprocess.run([sys.executable, "-c", code], env=wait, capture_output=True, text=True)
    assert res.stdout.strip() == "180", res.stderr[-2000:]
    # stopped mid-run (SIGTERM; Ctrl-C takes the same path): the stage AND the temporary server stop, at
    # once. The server used to outlive a SIGTERM, an orphan holding this pipe open (communicate hung)
    import signal

    write_params(work, {**read_params(work), "train": {"epochs": 5}})  # the toy stage then takes 2 min
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = work / "started.txt"
    assert wait_for(lambda: started.exists() and started.read_text(), 180) or proc.poll() is not None
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        home = env["PREFECT_HOME"].encode()
        for environ in Path("/proc").glob("[0-9]*/environ"):  # the orphan: this test's temporary server
            with contextlib.suppress(OSError, ValueError):
                if home in environ.read_bytes():
                    os.kill(int(environ.parent.name), 9)
        raise AssertionError("a process of the run outlived it (the temporary server?)") from None
    assert proc.returncode == 130 and time.monotonic() - t0 < 20, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not pid_alive(int(started.read_text()))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_make_serve_starts_server_deployment_and_watcher_and_a_change_runs_the_pipeline(tmp_path):
    """The documented command, as a user runs it, on a one-stage DVC project (the flow is generic over
    DVC pipelines): own server on 127.0.0.1, a params change -> event -> a completed run; SIGTERM stops all."""
    import signal

    from flows.serve import api_url, healthy

    work = toy_workspace(tmp_path / "w")
    port = _free_port()
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(migrated_prefect_home(tmp_path / "prefect-home"))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows", "serve", "--workspace", str(work), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = api_url(port)
    try:
        deadline = time.monotonic() + 180
        while "watching params.yaml" not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert healthy(url)
        # the watcher starts only once the deployment's trigger exists (a change seen earlier started nothing)
        served = (tmp_path / "serve.log").read_text()
        assert served.index("change trigger are ready") < served.index("watching params.yaml"), served[-3000:]
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as c:
            dep = None
            while dep is None and time.monotonic() < deadline:
                with contextlib.suppress(ObjectNotFound):
                    dep = c.read_deployment_by_name("driver-pipeline/driver-pipeline")
                time.sleep(0.5)
            assert dep is not None, (tmp_path / "serve.log").read_text()[-3000:]
            assert [s.schedule.cron for s in dep.schedules] == ["0 3 * * *"]
            # the server's scheduler fills in the cron runs (regression: it crashed with SQLAlchemy 2.1)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                scheduled = [r for r in c.read_flow_runs() if r.deployment_id == dep.id]
                if scheduled:
                    break
                time.sleep(0.5)
            assert scheduled and all(r.parameters.get("reason") == "schedule (0 3 * * * UTC)" for r in scheduled)
            assert all(r.state_name == "Scheduled" and r.expected_start_time.hour == 3 for r in scheduled)
            write_params(work, {**read_params(work), "train": {"epochs": 2}})
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                runs = [r for r in c.read_flow_runs() if r.deployment_id == dep.id and r.state_name == "Completed"]
                if runs:
                    break
                time.sleep(0.5)
        assert runs, (tmp_path / "serve.log").read_text()[-3000:]
        assert runs[0].parameters == {"workspace": str(work.resolve()), "reason": "inputs changed: params.yaml"}
        assert (work / "out.txt").read_text() == "2"  # the stage ran through dvc with the new param
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    deadline = time.monotonic() + 30
    while healthy(url, timeout=0.5) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not healthy(url, timeout=0.5)  # the server went down with it


@pytest.mark.slow
def test_stages_behind_an_unchanged_stage_are_not_handed_to_dvc(tmp_path, prefect_server):
    work = empty_dvc_project(tmp_path / "w")
    write_params(work, {"train": {"epochs": 1}})
    copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
    stages = {  # a reads a param but writes the same bytes whatever it is; b copies a; c copies b
        "a": {"cmd": "python -c \"open('a.txt', 'w').write('same')\"", "params": ["train.epochs"], "outs": ["a.txt"]},
        "b": {"cmd": f'python -c "{copy}" a.txt b.txt', "deps": ["a.txt"], "outs": ["b.txt"]},
        "c": {"cmd": f'python -c "{copy}" b.txt c.txt', "deps": ["b.txt"], "outs": ["c.txt"]},
    }
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    state = driver_pipeline(workspace=str(work), reason="first", return_state=True)
    assert state.result()["stages"] == {"a": "ran", "b": "ran", "c": "ran"}
    write_params(work, {"train": {"epochs": 2}})
    state = driver_pipeline(workspace=str(work), reason="param of a", return_state=True)
    assert state.result()["stages"] == {"a": "ran", "b": "unchanged", "c": "unchanged"}
    tasks = task_states(state.state_details.flow_run_id)
    assert "b" in tasks and "c" not in tasks  # DVC was asked about b (a ran), not about c
    assert stale_stages.fn(str(work)) == {}  # and DVC agrees c is up to date


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.2)
    return cond()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stopping_flows_run_stops_its_stage(tmp_path, prefect_server, sig):
    """SIGTERM or Ctrl-C on `python -m flows run`: the stage's process group is stopped within seconds,
    nothing is written under the output's real name."""
    import signal

    work = toy_workspace(tmp_path / "w")
    write_params(work, {**read_params(work), "train": {"epochs": 5}})
    env = {**dvc_env(), "PREFECT_API_URL": prefect_server}
    cmd = [sys.executable, "-m", "flows", "run", "--workspace", str(work)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = work / "started.txt"
    assert wait_for(lambda: started.exists() and started.read_text(), 120), proc.stdout.read() if proc.poll() else ""
    stage_pid = int(started.read_text())
    t0 = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    proc.communicate(timeout=60)
    assert wait_for(lambda: not pid_alive(stage_pid), 10), "the stage outlived the flow run"
    assert time.monotonic() - t0 < 30
    assert not (work / "out.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_stopping_serve_cancels_the_run_in_progress_and_leaves_nothing(tmp_path, sig):
    """`make serve` on SIGTERM or Ctrl-C with a run in progress: the run is cancelled (its stage stopped,
    marked Cancelled), then deployment, watcher and server stop; no process of it is left."""
    import signal

    work = toy_workspace(tmp_path / "w")
    port = _free_port()
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(migrated_prefect_home(tmp_path / "prefect-home"))
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    cmd = [sys.executable, "-m", "flows", "serve", "--workspace", str(work), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: "watching params.yaml" in log_path.read_text() or proc.poll() is not None, 180)
        # deployment and watcher start side by side: wait until the server holds the trigger
        assert wait_for(lambda: _automations(port) or proc.poll() is not None, 180), log_path.read_text()[-3000:]
        write_params(work, {**read_params(work), "train": {"epochs": 5}})  # -> event -> a run that takes 2 min
        started = work / "started.txt"
        assert wait_for(lambda: started.exists() and started.read_text(), 180), log_path.read_text()[-3000:]
        stage_pid = int(started.read_text())
        group = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline") if str(work) in _cmdline(p)]
        proc.send_signal(getattr(signal, sig))
        proc.wait(150)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = log_path.read_text()
    assert "cancelling flow run" in text and ": Cancelled" in text, text[-3000:]
    assert not pid_alive(stage_pid)
    assert not (work / "out.txt").exists()
    left = [p for p in group if pid_alive(p)]
    assert not left, [(_cmdline(Path(f"/proc/{p}/cmdline"))) for p in left]


def _automations(port: int) -> list:
    """The automations (deployment triggers) a Prefect server on ``port`` holds; [] while it has none."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/automations/filter", data=b"{}", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except OSError:
        return []


def _cmdline(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
