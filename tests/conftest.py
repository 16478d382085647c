"""Shared fixtures: real faces, real MediaPipe, tiny real videos. No network, no mocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DemoParams, Params, parse_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def subject():
    """One synthetic demo subject (Grace Hopper's photo, meshed by real FaceMesh)."""
    from pipeline import demo

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
    from pipeline.demo import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, path, fps)
    return path


@pytest.fixture(scope="session")
def clip_frames(subject) -> dict[str, list[np.ndarray]]:
    """Short rendered clips per class (RGB frames), 24 frames each."""
    from pipeline.demo import CLASSES, render_clip

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
