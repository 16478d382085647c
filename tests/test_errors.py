"""Problems caused by the user's data, labels or params end with one `error:` line and a non-zero exit,
never a traceback (the real stage CLI on tiny inputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import ROOT
from tests.test_train import make_set
from tests.test_windows import fake_features


def stage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.stages", *args], env=env, capture_output=True, text=True)


def assert_error(res: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], res.stderr


FEATS = ["ear_left", "mar", "yaw", "face_present"]  # what fake_features has


def params_file(tmp_path, raw: dict) -> str:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def test_no_window_survived_and_split_impossible(tmp_path):
    fake_features(n_subjects=4, frames=40).to_parquet(tmp_path / "f.parquet")
    args = ["windows", "--features", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "w")]
    big = params_file(tmp_path, {"windows": {"size": 500, "features": FEATS}})
    assert_error(stage(*args, "--params", big), 1, "no window survived")
    few = tmp_path / "few.parquet"
    fake_features(n_subjects=2, frames=40).to_parquet(few)
    ok = params_file(tmp_path, {"windows": {"size": 10, "features": FEATS}})
    res = stage("windows", "--params", ok, "--features", str(few), "--out", str(tmp_path / "w2"))
    assert_error(res, 1, "cross-validation needs at least 3")


def test_no_video_survived(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "v.mp4").write_bytes(b"")
    (raw / "labels.csv").write_text("video,subject,label\nv.mp4,s1,normal\n")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "manifest.json").write_text(json.dumps({"videos": {}, "hands": True}))
    p = params_file(tmp_path, {"data": {"raw_dir": str(raw)}, "frames": {"workers": 1}})
    assert stage("frames", "--params", p, "--out", str(tmp_path / "fr")).returncode == 0  # quarantined, goes on
    res = stage(
        "features",
        "--params",
        p,
        "--landmarks",
        str(tmp_path / "lm"),
        "--frames",
        str(tmp_path / "fr"),
        "--out",
        str(tmp_path / "f.parquet"),
        "--quarantine",
        str(tmp_path / "q.json"),
    )
    assert_error(res, 1, "no video survived")


def test_unknown_model_bad_hparam_and_bad_labels(tmp_path):
    wdir = make_set(tmp_path / "w")
    p = params_file(tmp_path, {"train": {"models": ["gru"]}})
    res = stage("train", "--model", "lstm", "--params", p, "--windows", str(wdir), "--models", str(tmp_path / "m"))
    assert_error(res, 2, "model 'lstm' is not in params train.models")
    assert_error(stage("check", "--params", params_file(tmp_path, {"train": {"models": ["lstmm"]}})), 2, "lstmm")
    bad = params_file(tmp_path, {"hparams": {"gru": {"hiden": 8}}})
    assert_error(stage("check", "--params", bad), 2, "'hparams.gru.hiden' is not a hyper-parameter of 'gru'")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "labels.csv").write_text("video,subject,label\n../x.mp4,s1,normal\n")
    p = params_file(tmp_path, {"data": {"raw_dir": str(raw)}})
    assert_error(stage("frames", "--params", p, "--out", str(tmp_path / "fr")), 2, "row 2")


def test_validation_failed_is_an_error_line(tmp_path):
    from pipeline.core.config import parse_params
    from pipeline.stages import windows as W

    feats = fake_features(n_subjects=6, frames=40)
    feats.loc[0, "ear_left"] = 5.0  # out of its registered range
    feats.to_parquet(tmp_path / "f.parquet")
    wp = parse_params({"windows": {"size": 10, "features": FEATS}}).windows
    w, meta = W.build(feats, wp, tuple(sorted(set(feats["label"]))))
    from pipeline.contracts.windows import write_windows

    write_windows(w, meta, tmp_path / "w")
    p = params_file(tmp_path, {"data": {"classes": sorted(set(feats["label"]))}})
    res = stage(
        "validate",
        "--params",
        p,
        "--features",
        str(tmp_path / "f.parquet"),
        "--windows",
        str(tmp_path / "w"),
        "--out",
        str(tmp_path / "v"),
        "--quarantine",
        str(tmp_path / "q.json"),
    )
    assert_error(res, 1, "critical expectation(s) failed")
