"""Logs are for people: a stage's stderr holds its own lines, not library chatter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT, write_clip
from tests.test_train import make_set

CHATTER = (
    "inference_feedback_manager",
    "XNNPACK",
    "absl::InitializeLog",
    "TensorFlow Lite",
    "internal_batch_size",
    "UserWarning",
    "Traceback",
)


def stage(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.stages", *args], env=env, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_landmarks_stderr_has_no_mediapipe_chatter(clip_frames, tmp_path, workers):
    raw = tmp_path / "raw"
    for i in range(2):
        write_clip(raw / "videos" / f"c{i}.mp4", clip_frames["yawn"])
    (raw / "labels.csv").write_text("video,subject,label\nvideos/c0.mp4,s0,yawn\nvideos/c1.mp4,s1,yawn\n")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "data": {"raw_dir": str(raw)},
                "landmarks": {"workers": workers},
                "frames": {"workers": 1},
                "windows": {"size": 10},
            }
        )
    )
    fr = stage("frames", "--params", str(params), "--out", str(tmp_path / "fr"))
    assert fr.returncode == 0, fr.stderr
    res = stage("landmarks", "--params", str(params), "--frames", str(tmp_path / "fr"), "--out", str(tmp_path / "lm"))
    assert res.returncode == 0, res.stderr
    assert '"ok": 2' in res.stdout
    found = [c for c in CHATTER if c in res.stderr]
    assert not found, res.stderr
    assert "landmarks: 2 videos (hands every 5 frames; up to 3 faces" in res.stderr  # our own line is still there


@pytest.mark.slow
def test_train_and_evaluate_stderr_has_no_library_warnings(tmp_path):
    wdir = make_set(tmp_path / "w")  # 300 windows: more to explain than one IG batch
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "train": {"models": ["lstm_attn", "cnn_lstm"], "epochs": 2, "patience": 2},
                "hparams": {"lstm_attn": {"hidden": 8}, "cnn_lstm": {"channels": 8, "hidden": 8}},
                "evaluate": {"explain_windows": 100},
            }
        )
    )
    dirs = ["--models", str(tmp_path / "m"), "--reports", str(tmp_path / "r")]
    # cnn_lstm: its folds in a worker printed a resource_tracker "leaked semaphore" UserWarning (tqdm's lock)
    for name, model in (("train", "lstm_attn"), ("evaluate", "lstm_attn"), ("train", "cnn_lstm")):
        res = stage(name, "--model", model, "--params", str(params), "--windows", str(wdir), *dirs)
        assert res.returncode == 0, res.stderr
        found = [c for c in CHATTER if c in res.stderr]
        assert not found, res.stderr
    assert (tmp_path / "r" / "lstm_attn" / "figures" / "ig_maps.png").exists()
