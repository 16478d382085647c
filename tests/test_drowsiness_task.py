"""The drowsiness task (params data.task, README "Tasks"): the demo's drowsy and alert drivers, long
windows averaged into steps (windows.pool), and the same pooled windows in training, predict and monitor."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.contracts.windows import cut_windows, pool_steps
from pipeline.core.config import parse_params
from pipeline.core.errors import ConfigError
from tests.conftest import dvc_env, make_workspace
from tests.test_apply import cli

DROWSY_FEATURES = ["ear_left", "ear_right", "mar", "pitch", "yaw", "face_present", "perclos", "blink_rate", "yawn_rate"]


def drowsiness_preset() -> dict:
    """The README's drowsiness settings (its "Tasks" section), read from the README itself."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- drowsiness-params -->")[1].split("```yaml")[1].split("```")[0]
    return yaml.safe_load(block)


def test_the_readme_drowsiness_settings_load_and_name_the_drowsiness_features():
    preset = drowsiness_preset()
    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    for section, values in preset.items():
        raw[section].update(values)
    p = parse_params(raw)
    assert p.data.task == "drowsiness" and p.data.classes == ("alert", "drowsy")
    assert p.windows.size / p.frames.fps >= 30 and p.windows.pool > 1  # long windows, seconds as steps
    assert {"perclos", "blink_rate", "yawn_rate"} <= set(p.windows.features)


def test_pooling_averages_the_observed_frames_of_each_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 60, 4)).astype(np.float32)
    x[0, :15, 1] = np.nan  # a step with nothing observed stays NaN
    x[1, 20:25, 2] = np.nan  # partly observed: the mean of what was seen
    got = pool_steps(x, 15)
    assert got.shape == (3, 4, 4) and got.dtype == np.float32
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanmean(x.reshape(3, 4, 15, 4), axis=2)
    assert np.isnan(got[0, 0, 1]) and np.isnan(ref[0, 0, 1])
    np.testing.assert_allclose(got, ref, rtol=1e-6, equal_nan=True)
    assert pool_steps(x, 1) is x
    # cutting then pooling, in chunks, equals pooling the cut windows
    rows = rng.normal(size=(5000, 4)).astype(np.float32)
    starts = np.arange(0, 4000, 7)
    np.testing.assert_array_equal(cut_windows(rows, starts, 900, 15), pool_steps(cut_windows(rows, starts, 900), 15))


def test_task_and_pool_settings_are_checked_with_what_to_do():
    with pytest.raises(ConfigError, match=r"'data.task' must be one of \['distraction', 'drowsiness'\]"):
        parse_params({"data": {"task": "sleepy"}})
    with pytest.raises(ConfigError, match=r"'windows.size' \(100 frames\) must be a multiple of 'windows.pool' \(15\)"):
        parse_params({"windows": {"size": 100, "pool": 15}})
    from pipeline.stages.windows import check_task

    check_task(parse_params({"data": {"task": "drowsiness"}, "windows": {"features": ["perclos", "pitch"]}}))
    with pytest.raises(ConfigError, match="holds none of the drowsiness features"):
        check_task(parse_params({"data": {"task": "drowsiness"}}))


def test_the_demo_refuses_classes_it_does_not_make(tmp_path):
    from pipeline.stages import demo

    p = parse_params({"data": {"task": "drowsiness", "raw_dir": str(tmp_path)}})  # classes left at distraction's
    with pytest.raises(ConfigError, match=r"set data.classes to \['alert', 'drowsy'\]"):
        demo.run(p, tmp_path)
    assert not (tmp_path / "videos").exists()


def test_drowsy_demo_drivers_close_their_eyes_nod_and_yawn_more_than_alert_ones():
    from pipeline.stages.demo import habits, script

    fps, n = 15.0, 15 * 120
    stats = {"alert": [], "drowsy": []}
    for subject in range(6):
        h = habits(7, subject)
        for label in stats:
            sc = script(label, np.random.default_rng([subject, len(label)]), n, fps, h)
            sag = long_runs(sc["pitch"] < h.posture[1] - 8, round(1.5 * fps))  # the head down for 1.5 s or more
            stats[label].append((np.mean(sc["eyes"] >= 0.8), sag.mean(), np.mean(sc["mouth"] >= 0.45)))
    alert, drowsy = np.array(stats["alert"]), np.array(stats["drowsy"])
    assert (drowsy[:, 0] > alert[:, 0]).all()  # eyes shut longer (microsleeps, slow blinks)
    assert drowsy[:, 1].mean() > 2 * alert[:, 1].mean()  # the head sagging forward, not a glance down
    assert drowsy[:, 2].mean() > alert[:, 2].mean()  # more yawning


def long_runs(mask: np.ndarray, min_len: int) -> np.ndarray:
    """``mask`` where it is True for at least ``min_len`` frames in a row."""
    out = np.zeros_like(mask)
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if b - a >= min_len:
            out[a:b] = True
    return out


# --- the whole task through `dvc repro`, predict and monitor -----------------------------------------
@pytest.fixture
def drowsy(tmp_path_factory) -> Path:
    def edit(p: dict) -> None:
        for section, values in drowsiness_preset().items():
            p[section].update(values)
        p["demo"].update(subjects=3, clips_per_class=1, seconds=12.0)  # tiny: 3 drivers, 12 s in each state
        p["windows"].update(size=90, pool=15, stride=30, cv_folds=3)  # 6 s windows of 6 steps
        p["landmarks"]["hands"] = False  # no drowsiness feature comes from the hands
        p["train"].update(models=["majority", "stats_lr", "gru"], epochs=3, patience=3)
        p["hparams"]["gru"] = {"hidden": 5}
        p["apply"]["calibration_s"] = 2.0

    work = make_workspace(tmp_path_factory.mktemp("drowsy") / "proj", edit=edit)
    res = subprocess.run(["dvc", "repro"], cwd=work, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work


@pytest.mark.slow
def test_dvc_repro_trains_and_reports_the_drowsiness_task_and_predict_and_monitor_use_it(drowsy, tmp_path):
    meta = json.loads((drowsy / "data" / "windows" / "meta.json").read_text())
    assert meta["task"] == "drowsiness" and meta["classes"] == ["alert", "drowsy"]
    assert meta["window"] == 6 and meta["pool"] == 15
    labels = pd.read_csv(drowsy / "data" / "demo" / "labels.csv")
    assert sorted(labels["label"].unique()) == ["alert", "drowsy"] and labels["subject"].nunique() == 3
    card = json.loads((drowsy / "models" / "gru" / "config.json").read_text())
    assert card["window"] == 6 and card["inputs"]["pool"] == 15 and card["classes"] == ["alert", "drowsy"]
    summary = (drowsy / "reports" / "summary.md").read_text()
    assert "- task: drowsiness, classes alert, drowsy; windows of 90 frames (6 steps of 15 frames averaged)" in summary
    for model in ("majority", "stats_lr", "gru"):
        m = json.loads((drowsy / "reports" / "models" / model / "metrics.json").read_text())
        assert 0 <= m["cv"]["macro_f1"] <= 1
    # one test, not two: two xdist workers would each build (or restore) the whole workspace
    predict_and_monitor_pool_long_windows_as_training_did(drowsy, tmp_path)


def predict_and_monitor_pool_long_windows_as_training_did(drowsy: Path, tmp_path: Path) -> None:
    """predict on a training driver's videos gives the model's probabilities on the stored (pooled)
    windows to the bit; the monitor's live ring buffer pools the same way."""
    from pipeline.contracts.windows import read_windows
    from pipeline.modeling.predictor import Predictor

    labels = pd.read_csv(drowsy / "data" / "demo" / "labels.csv")
    csv = drowsy / "data" / "demo" / "s01.csv"
    labels[labels["subject"] == "s01"].to_csv(csv, index=False)
    out = tmp_path / "pred"
    cli(drowsy, "predict", str(csv), "--out", str(out), "--model", "gru", "--mode", "report")
    x, _, index, meta = read_windows(drowsy / "data" / "windows")
    tl = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*/timeline.parquet"))])
    rows = index.reset_index().merge(tl, on=["video", "start_frame"])
    assert len(rows) == (index["subject"] == "s01").sum() > 0
    ref = Predictor.load(drowsy / "models" / "gru").proba(x[rows["index"].to_numpy()])
    np.testing.assert_allclose(rows[[f"p_{c}" for c in meta["classes"]]].to_numpy(), ref, rtol=0, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["videos"]) == 2 and summary["mode"] == "report"
    # live: the same recording through the monitor (calibrated baseline) decides on 6-step windows
    video = drowsy / "data" / "demo" / "videos" / "s01_drowsy_1.mp4"
    res = cli(drowsy, "monitor", str(video), "--fast", "--decisions", "--model", "gru")
    events = [json.loads(line) for line in res.stdout.splitlines()[:-1]]
    decisions = [e for e in events if e["event"] == "decision"]
    assert decisions and all(set(d["probs"]) == {"alert", "drowsy"} for d in decisions)
    out2 = tmp_path / "pred2"
    cli(drowsy, "predict", str(video), "--out", str(out2), "--model", "gru", "--baseline", "calibrate")
    tl2 = pd.read_parquet(out2 / "s01_drowsy_1" / "timeline.parquet")
    live = pd.DataFrame([{"t": d["t"], "p_drowsy_live": d["probs"]["drowsy"]} for d in decisions])
    both = live.merge(tl2.assign(t=tl2["end_s"].round(3)), on="t")
    assert len(both) == len(live)
    np.testing.assert_allclose(both["p_drowsy_live"], both["p_drowsy"], atol=1e-4)
