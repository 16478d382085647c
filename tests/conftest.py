"""Shared fixtures: real faces, real MediaPipe, tiny real videos. No network, no mocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.config import DemoParams, Params, parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def subject():
    """One synthetic demo subject (Grace Hopper's photo, meshed by real FaceMesh)."""
    from pipeline.stages import demo

    fm = demo._facemesh_static()
    try:
        name, photo = demo.face_sources()[1]
        sub = demo.make_subject(name, photo, np.random.default_rng(0), 320, 240, fm)
    finally:
        fm.close()
    assert sub is not None
    return sub


@pytest.fixture(scope="session")
def neutral_face(subject) -> np.ndarray:
    """The subject's real 478-point mesh at rest, in pixels."""
    return subject.ctrl[:478].copy()


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 15) -> Path:
    from pipeline.vision.video import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, path, fps)
    return path


@pytest.fixture(scope="session")
def clip_frames(subject) -> dict[str, list[np.ndarray]]:
    """Short rendered clips per class (RGB frames), 24 frames each."""
    from pipeline.stages.demo import CLASSES, render_clip

    return {label: render_clip(subject, label, 11 + i, 24, 15) for i, label in enumerate(CLASSES)}


def tiny_params(raw_dir: Path, **over) -> Params:
    """Params for tiny runs: 1 worker, short windows."""
    raw = {
        "data": {"raw_dir": str(raw_dir)},
        "demo": {"subjects": 2, "clips_per_class": 1, "seconds": 2.0},
        "frames": {"workers": 1},
        "landmarks": {"workers": 1, "hands": False},
        "windows": {"size": 10, "stride": 5},
    }
    for key, val in over.items():
        sec, name = key.split("__")
        raw.setdefault(sec, {})[name] = val
    return parse_params(raw)


@pytest.fixture
def demo_params() -> DemoParams:
    return DemoParams(subjects=2, clips_per_class=1, seconds=2.0)


CACHE_ENV = "DRIVER_PIPELINE_TEST_DVC_CACHE"


def pytest_configure(config) -> None:
    """The controller (or a run without xdist) makes the session's shared DVC cache; xdist workers
    inherit its path through the environment."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and CACHE_ENV not in os.environ:
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="driver-pipeline-dvc-cache-")
        config._driver_pipeline_cache = os.environ[CACHE_ENV]


def pytest_unconfigure(config) -> None:
    path = getattr(config, "_driver_pipeline_cache", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.environ.pop(CACHE_ENV, None)


LOAD_ENV = "DRIVER_PIPELINE_TEST_CPU_LOAD"
BUSY = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:  # ends with the test process, even if that one is killed
    for _ in range(200_000):
        pass
"""


@pytest.fixture(autouse=True)
def cpu_load(request) -> Iterator[None]:
    """Tests marked ``under_load`` (flows, signals, machine faults: stops, timeouts, watchers) run beside
    busy processes in CI, so they cannot pass only on an idle machine: ``DRIVER_PIPELINE_TEST_CPU_LOAD``
    of them (default 2 when ``CI`` is set, else 0)."""
    n = int(os.environ.get(LOAD_ENV, "2" if os.environ.get("CI") else "0"))
    if not n or request.node.get_closest_marker("under_load") is None:
        yield
        return
    busy = [subprocess.Popen([sys.executable, "-c", BUSY, str(os.getpid())]) for _ in range(n)]
    try:
        yield
    finally:
        for p in busy:
            p.kill()
            p.wait()


def pytest_terminal_summary(terminalreporter) -> None:
    """The CPU at the end of the log, beside any failure: results are checked byte for byte against
    references made on another machine (tests/data/numerics_reference.json), so a failure must say
    which CPU ran it."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("flags\t\t", "").split()
    isa = [f for f in ("avx2", "fma", "avx512f", "amx_tile") if f in flags]
    name = fields.get("model name\t", "unknown").strip()
    vendor = fields.get("vendor_id\t", "unknown").strip()
    terminalreporter.write_line(f"cpu: {vendor}, {name}, {os.cpu_count()} cpus, {' '.join(isa) or 'no avx2'}")


def shared_dvc_cache() -> Path:
    """ONE DVC cache (objects + run-cache) for every tiny workspace of the test session, shared by the
    pytest-xdist workers: a stage that another workspace already ran with the same code, inputs and
    params is restored by DVC's run-cache ("Stage '...' is cached - skipping run"), as a second clone
    sharing a DVC remote would. So the tiny pipeline's data stages run once per session, not once per
    test file. A test that asserts a stage RUNS must give it params no other test uses."""
    path = Path(os.environ[CACHE_ENV]) / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def tiny_pipeline_lock(name: str = "data") -> Iterator[None]:
    """Held around the stages several workspaces share (one lock per ``name``): a second worker waits,
    then restores from the run-cache instead of computing the same stages at the same time. Hold it for
    the shared stages only: held over a whole `dvc repro`, it made the other worker wait for models
    only this workspace trains."""
    with (shared_dvc_cache().parent / f"tiny-pipeline-{name}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_workspace(work: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """A fresh copy of the project (code, dvc.yaml, an empty DVC repo on the session's shared cache, git)
    with a tiny params.yaml: 3 subjects x 4 classes x 1 clip of 3 s, windows of 20, three cheap models.
    ``edit`` tweaks it."""
    work.mkdir(parents=True)
    for name in ("pipeline", ".dvc", "dvc.yaml", ".dvcignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    for junk in ("cache", "tmp", "remote"):
        shutil.rmtree(work / ".dvc" / junk, ignore_errors=True)
    (work / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {shared_dvc_cache()}\n")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"].update(subjects=3, clips_per_class=1, seconds=3.0)
    params["windows"].update(size=20, stride=10, cv_folds=3)
    params["train"].update(models=["majority", "stats_lr", "gru"], epochs=3, patience=3)
    # one process per stage: under pytest-xdist both cores are busy already, so a stage's extra worker
    # processes only add their start-up (~5 s of imports each); the pool paths have their own tests
    for section in ("frames", "landmarks", "train"):
        params[section]["workers"] = 1
    params["hparams"]["gru"] = {"hidden": 8}
    params["evaluate"]["explain_windows"] = 8
    if edit is not None:
        edit(params)
    write_params(work, params)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work


def write_params(work: Path, params: dict) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read_params(work: Path) -> dict:
    return yaml.safe_load((work / "params.yaml").read_text())


def dvc_env() -> dict[str, str]:
    """This interpreter's bin first on PATH (stages call ``python -m pipeline.stages``), no analytics."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }


@pytest.fixture(scope="session")
def prefect_server():
    """ONE real Prefect server (SQLite in a temp dir, 127.0.0.1) for the whole session; analytics off."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> None:
    """The tiny pipeline's data stages (demo to windows, the same in every default tiny workspace) in the
    shared run-cache: computed once per session, by whichever xdist worker comes first, while the other
    waits. A workspace's own `dvc repro` restores them. (Stages with an uncached output, the reports,
    validate, train, evaluate, are never taken from the run-cache: DVC reruns them in every workspace.)"""
    work = make_workspace(tmp_path_factory.mktemp("tiny-data") / "proj")
    with tiny_pipeline_lock():
        res = subprocess.run(["dvc", "repro", "windows"], cwd=work, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def migrated_prefect_home(dest: Path) -> Path:
    """A Prefect home at ``dest`` whose SQLite database is already migrated: a copy of one made once per
    session (Prefect's migrations cost ~20 s of CPU per fresh home). For tests of `serve` as a user
    runs it the second time; `make flow`'s test keeps a fresh home on purpose."""
    template = Path(os.environ[CACHE_ENV]) / "prefect-home"
    with tiny_pipeline_lock("prefect-home"):
        if not (template / "prefect.db").exists():
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(PREFECT_HOME=str(template), PREFECT_SERVER_ANALYTICS_ENABLED="false")
            cmd = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    shutil.copytree(template, dest)
    return dest
