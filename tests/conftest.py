"""Shared fixtures: real faces, real MediaPipe, tiny real videos. No network, no mocks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
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


def make_workspace(work: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """A fresh copy of the project (code, dvc.yaml, an empty DVC repo, git) with a tiny params.yaml:
    3 subjects x 4 classes x 1 clip of 3 s, windows of 20, three cheap models. ``edit`` tweaks it."""
    work.mkdir(parents=True)
    for name in ("pipeline", ".dvc", "dvc.yaml", ".dvcignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    for junk in ("cache", "tmp", "remote"):
        shutil.rmtree(work / ".dvc" / junk, ignore_errors=True)
    (work / ".dvc" / "config.local").unlink(missing_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"].update(subjects=3, clips_per_class=1, seconds=3.0)
    params["windows"].update(size=20, stride=10, cv_folds=3)
    params["train"].update(models=["majority", "stats_lr", "gru"], epochs=3, patience=3)
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
