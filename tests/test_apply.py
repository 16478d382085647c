"""Using a trained model: predict, calibration, monitor, export, inbox scoring.

The workspace tests train a tiny real pipeline once (`dvc repro`: 3 subjects x 4 classes x 3-s
clips, real MediaPipe) and apply its models to its own demo videos through the real commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.apply.calibration import calibration_end, calibration_rows
from pipeline.apply.events import AlertTracker, override_thresholds, segments
from pipeline.core.errors import ConfigError
from tests.conftest import dvc_env, make_workspace, migrated_prefect_home

CLASSES = ["normal", "phonecall", "text", "yawn"]


# --- pure parts ----------------------------------------------------------------------------------
def test_one_behaviour_gives_one_alert_and_it_clears_after_the_hold():
    tr = AlertTracker({"normal": 0.5, "text": 0.6, "yawn": 0.6}, quiet="normal", clear_s=2.0)
    events = []
    text = [0.1, 0.7, 0.5, 0.8, 0.55, 0.9, 0.2, 0.2, 0.2, 0.2, 0.2]  # flickers around 0.6, then ends
    for i, p in enumerate(text):
        t = i * 0.5
        events += [(t, e) for e in tr.update(t, {"normal": 0.99, "text": p, "yawn": 0.0})]
    kinds = [(t, e["event"], e["class"]) for t, e in events]
    assert kinds == [(0.5, "alert", "text"), (5.0, "clear", "text")]  # below from 3.0 s to 5.0 s: 2 s
    assert events[1][1]["peak"] == 0.9 and events[1][1]["start_s"] == 0.5
    # a yawn with a lull: 3 decisions below threshold (a stride of 0.67 s: 1.3 s) keep the one alert
    tr = AlertTracker({"normal": 0.5, "yawn": 0.6}, quiet="normal", clear_s=2.0)
    yawn = [0.9, 0.9, 0.9, 0.9, 0.3, 0.3, 0.3, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    events = [e for i, p in enumerate(yawn) for e in tr.update(round(i * 2 / 3, 3), {"normal": 0.0, "yawn": p})]
    assert [(e["event"], e["t"]) for e in events] == [("alert", 0.0), ("clear", 8.0)]  # below from 6.0 s
    # a window without a decision (no face) counts as below threshold; the quiet class never alerts
    tr = AlertTracker({"normal": 0.1, "yawn": 0.5}, quiet="normal", clear_s=0.0)
    assert tr.update(0.0, {"normal": 1.0, "yawn": 0.9}, live=False) == []
    assert [e["event"] for e in tr.update(1.0, {"normal": 1.0, "yawn": 0.9})] == ["alert"]
    assert [e["event"] for e in tr.finish(2.0)] == ["clear"]


def test_segments_tile_the_timeline_without_overlap():
    centres = np.array([3.0, 3.5, 4.0, 4.5, 5.0])
    seg = segments(centres, 0.5, np.array(["normal", "normal", "text", "text", ""]), np.full(5, 0.8))
    assert seg["label"].tolist() == ["normal", "text", ""]
    assert seg["start_s"].tolist() == [2.75, 3.75, 4.75] and seg["end_s"].tolist() == [3.75, 4.75, 5.25]
    assert seg["windows"].tolist() == [2, 2, 1]


def test_threshold_overrides_and_their_errors():
    base = {"normal": 0.5, "text": 0.3}
    assert override_thresholds(base, ["0.7", "text=0.2"]) == {"normal": 0.7, "text": 0.2}
    with pytest.raises(ConfigError, match="unknown class 'txt'"):
        override_thresholds(base, ["txt=0.2"])
    with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
        override_thresholds(base, ["text=2"])
    with pytest.raises(ConfigError, match="CLASS=PROBABILITY"):
        override_thresholds(base, ["text=high"])


def test_calibration_waits_for_enough_seconds_with_a_face():
    face = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    assert calibration_end(face, seconds=0.4, fps=10) == 7  # the 4th face frame is frame 6
    assert calibration_rows(face, 0.4, 10).tolist() == [2, 3, 5, 6]
    assert calibration_end(face, seconds=10, fps=10) == -1  # never: the whole input is calibration


def test_the_monitors_ring_buffer_holds_what_the_landmarks_file_would(tmp_path):
    from pipeline.contracts.landmarks import LandmarksWriter, iter_landmarks, rows_to_batch

    rng = np.random.default_rng(0)
    rows = []
    for k in range(7):
        face = rng.normal(size=(478, 3)) * 100 if k % 3 else None
        hands = [(rng.normal(size=(21, 3)) * 50, "Left", 0.9)] if k % 2 else []
        rows.append((k, k / 15, face, hands, int(face is not None), k == 5))
    with LandmarksWriter(tmp_path / "lm.parquet", {"video": "x"}) as w:
        for r in rows:
            w.add(*r[:5], stale=r[5])
    (from_file,) = list(iter_landmarks(tmp_path / "lm.parquet"))
    live = rows_to_batch(rows)
    for key in ("frame", "t", "face", "face_present", "stale", "hands", "hand_present"):
        np.testing.assert_array_equal(live[key], from_file[key], err_msg=key)


def test_live_ticks_take_the_nearest_frame_and_mark_holes_stale():
    from pipeline.apply.monitor import ticks

    src = [(t, t) for t in (0.0, 0.04, 0.08, 0.12, 0.16, 0.20, 0.9, 0.94)]  # 25 fps, then a 0.7-s hole
    got = list(ticks(iter(src), fps=10))
    assert [k for k, _ in got] == list(range(10))
    assert [f for _, f in got[:4]] == [0.0, 0.08, 0.20, 0.20]  # 0.1 s: 0.08 is nearer than 0.12
    assert all(f is None for _, f in got[4:8])  # 0.4..0.7 s: no frame within a period
    assert got[8][1] == got[9][1] == 0.9


@pytest.mark.parametrize("src_fps", [5, 10, 12, 15, 24, 30, 60])  # not 7.5: spacing/2 = 1/15 exactly
def test_live_ticks_follow_the_frames_stage_plan_at_any_source_rate(src_fps):
    """What the monitor shows at each tick is what `predict` (the frames stage's plan) shows for the
    same recording, including slow sources (a 5-fps clip was stale two ticks in three) and jitter."""
    from pipeline.apply.monitor import ticks
    from pipeline.vision.frameplan import resample_times, stale_frames

    rng = np.random.default_rng(int(src_fps * 10))
    src_t = np.arange(int(20 * src_fps)) / src_fps + rng.uniform(-0.1, 0.1, int(20 * src_fps)) / src_fps
    src_t[0] = 0.0
    idx = resample_times(src_t, 15)
    stale = stale_frames(src_t, idx, 15)
    got = list(ticks(iter((t, i) for i, t in enumerate(src_t)), fps=15))
    n = len(got) - 2 * 15  # the plan also holds the last frame a little; the first 30 intervals warm up
    live = [f for _, f in got[30:n]]
    planned = [None if s else int(i) for i, s in zip(idx[30:n], stale[30:n], strict=True)]
    assert live == planned
    if src_fps <= 15:
        assert not any(f is None for _, f in got)  # a slow, steady source is never stale


# --- a trained tiny workspace --------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data) -> Path:
    def edit(p: dict) -> None:
        p["train"]["models"] = ["majority", "stats_lr", "stats_gbm", "gru"]
        p["apply"]["calibration_s"] = 2.0

    work = make_workspace(tmp_path_factory.mktemp("apply") / "proj", edit=edit)
    res = subprocess.run(["dvc", "repro"], cwd=work, env=dvc_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work


def cli(work: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=work, env=dvc_env(), capture_output=True, text=True
    )
    if ok:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "Traceback" not in res.stderr
    return res


def subject_csv(work: Path, subject: str) -> Path:
    labels = pd.read_csv(work / "data" / "demo" / "labels.csv")
    path = work / "data" / "demo" / f"{subject}.csv"
    labels[labels["subject"] == subject].to_csv(path, index=False)
    return path


def concat_stream(work: Path, clips: list[str], out: Path) -> Path:
    """One longer recording made of demo clips back to back (re-encoded: a video of its own)."""
    import cv2

    from pipeline.vision.video import write_mp4

    frames = []
    for c in clips:
        cap = cv2.VideoCapture(str(work / "data" / "demo" / "videos" / c))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        cap.release()
    write_mp4(frames, out, 15)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["stats_gbm", "gru"])
def test_predict_gives_the_probabilities_evaluate_scores(trained, model, tmp_path):
    """The same frames -> landmarks -> features -> windows -> model path: on a training subject's
    videos (their baseline over all their frames, as in training) the timeline's probabilities
    are the trained model's on the stored windows, to the bit."""
    from pipeline.contracts.windows import read_windows
    from pipeline.modeling.predictor import Predictor

    out = tmp_path / "pred"
    cli(trained, "predict", str(subject_csv(trained, "s01")), "--out", str(out), "--model", model)
    x, _, index, meta = read_windows(trained / "data" / "windows")
    tl = pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*/timeline.parquet"))])
    assert set(tl["video"]) == {v for v in index["video"].astype(str) if "s01" in v}
    rows = index.reset_index().merge(tl, on=["video", "start_frame"])
    assert len(rows) == (index["subject"] == "s01").sum() > 0
    ref = Predictor.load(trained / "models" / model).proba(x[rows["index"].to_numpy()])
    np.testing.assert_allclose(rows[[f"p_{c}" for c in meta["classes"]]].to_numpy(), ref, rtol=0, atol=1e-6)
    assert (rows["truth"] == rows["label_x"].astype(str)).all()  # the labels given are the windows' labels
    for name in ("timeline.csv", "segments.csv", "alerts.csv", "timeline.png", "landmarks.parquet"):
        assert all((d / name).exists() for d in out.iterdir() if d.is_dir()), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == model and summary["mode"] == "alert" and summary["baseline"] == "subject"
    # the training drivers' own windows are familiar: the score is there, the cut-off rarely crossed
    assert (tl["unfamiliar_score"] >= 0).all() and tl["unfamiliar"].mean() < 0.2
    assert summary["unfamiliar"]["checked"] and summary["unfamiliar"]["share"] < 0.2
    md = (out / "summary.md").read_text()
    assert f"Model `{model}`" in md and "| videos/s01_text_1.mp4 | s01 |" in md
    # one driver, 3 short clips: the short-baseline warning once, under the drivers, not once per clip
    assert md.count("have a baseline from less than 60 s") == 1 and "## Driver baselines" in md
    assert summary["driver_warnings"] and not any(v["warnings"] for v in summary["videos"].values())
    assert (out / "summary.html").read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_predict_takes_the_recommended_model_and_reports_what_it_cannot_use(trained, tmp_path):
    import shutil

    inbox = tmp_path / "videos"
    inbox.mkdir()
    shutil.copy(trained / "data" / "demo" / "videos" / "s02_yawn_1.mp4", inbox / "drive.mp4")
    (inbox / "broken.mp4").write_bytes(b"not a video at all")
    (inbox / "notes.txt").write_text("hello")
    out = tmp_path / "pred"
    res = cli(trained, "predict", str(inbox), "--out", str(out), "--mode", "report", "--annotate")
    rec = json.loads((trained / "reports" / "recommendation.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == rec["report"] and summary["mode"] == "report"
    assert list(summary["videos"]) == ["drive"]
    assert [q["video"] for q in summary["quarantined"]] == ["broken.mp4"] and summary["ignored_files"] == ["notes.txt"]
    assert "quarantined broken.mp4:" in res.stderr and "ignored notes.txt: not a video file" in res.stderr
    md = (out / "summary.md").read_text()
    assert "## Not scored" in md and "- broken.mp4:" in md and "- notes.txt: not a video file" in md
    q = json.loads((out / "quarantine.json").read_text())
    assert q["quarantined"][0]["reason"]
    # the annotated video: every output frame, readable
    import cv2

    cap = cv2.VideoCapture(str(out / "drive" / "annotated.mp4"))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert n == summary["videos"]["drive"]["frames"] == 45


@pytest.mark.slow
def test_video_unlike_the_training_video_is_unfamiliar_not_a_confident_class(trained, tmp_path):
    """predict and monitor: the training drivers' own video is familiar; with a card whose cut-off makes
    everything far, every decided window is 'unfamiliar' (no class, no alert) and the summaries say
    what share; --no-unfamiliar decides them anyway."""
    import shutil

    video = str(subject_csv(trained, "s01"))  # the training drivers' own video: familiar (see the test above)
    models = tmp_path / "models"
    shutil.copytree(trained / "models" / "stats_gbm", models / "stats_gbm")
    card = json.loads((models / "stats_gbm" / "config.json").read_text())
    card["familiarity"]["cutoff"] = 1e-9  # as if this video were unlike anything in training
    (models / "stats_gbm" / "config.json").write_text(json.dumps(card))
    far = tmp_path / "far"
    res = cli(trained, "predict", video, "--out", str(far), "--model", "stats_gbm", "--models", str(models))
    tl = pd.concat([pd.read_parquet(p) for p in sorted(far.glob("*/timeline.parquet"))])
    decided = tl[tl["label"] != ""]
    assert len(decided) > 0 and (decided["label"] == "unfamiliar").all() and decided["unfamiliar"].all()
    assert all(pd.read_csv(p).empty for p in far.glob("*/alerts.csv"))  # no alert on unfamiliar video
    summary = json.loads((far / "summary.json").read_text())
    assert summary["unfamiliar"]["share"] == 1.0 and all(
        v["unfamiliar_share"] == 1.0 for v in summary["videos"].values()
    )
    assert "**Unfamiliar: 100.0% of decided windows**" in (far / "summary.md").read_text()
    assert "are unlike anything model 'stats_gbm' was trained on" in res.stderr
    anyway = tmp_path / "anyway"
    args = ["--model", "stats_gbm", "--models", str(models), "--no-unfamiliar"]
    cli(trained, "predict", video, "--out", str(anyway), *args)
    tl = pd.concat([pd.read_parquet(p) for p in sorted(anyway.glob("*/timeline.parquet"))])
    assert (
        set(tl["label"]) <= set(CLASSES) | {""}
        and not json.loads((anyway / "summary.json").read_text())["unfamiliar"]["checked"]
    )
    clip = str(trained / "data" / "demo" / "videos" / "s01_yawn_1.mp4")
    res = cli(trained, "monitor", clip, "--fast", "--model", "stats_gbm", "--models", str(models))
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["event"] for e in events].count("unfamiliar") == 1 and "alert" not in [e["event"] for e in events]
    assert events[-1]["unfamiliar_share"] == 1.0 and events[-1]["windows"] > 0


@pytest.mark.slow
def test_predict_on_a_full_disk_stops_instead_of_quarantining_every_video(trained, tmp_path):
    from pipeline.core.errors import MachineError
    from tests.test_machine_faults import assert_stopped_by_the_machine, small_fs

    video = str(subject_csv(trained, "s01"))
    with small_fs(tmp_path / "full", 64, fill=True) as fs:
        res = cli(trained, "predict", video, "--out", str(fs / "pred"), "--model", "stats_lr", ok=False)
    assert res.returncode == MachineError.exit_code
    res.stdout = res.stdout.strip()
    assert_stopped_by_the_machine(res, "no space")


@pytest.mark.slow
def test_a_model_trained_on_other_features_or_an_old_card_is_refused(trained, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained / "models" / "stats_lr", models / "stats_lr")
    shutil.copytree(trained / "reports", tmp_path / "reports")
    card_path = models / "stats_lr" / "config.json"
    card = json.loads(card_path.read_text())
    video = str(trained / "data" / "demo" / "videos" / "s01_text_1.mp4")
    common = ["--model", "stats_lr", "--models", str(models), "--reports", str(tmp_path / "reports")]
    card_path.write_text(json.dumps({**card, "features": ["steering_angle", *card["features"][1:]]}))
    res = cli(trained, "predict", video, *common, ok=False)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "reads features ['steering_angle'] that this pipeline does not compute" in res.stderr
    card_path.write_text(json.dumps({k: v for k, v in card.items() if k != "inputs"}))
    res = cli(trained, "predict", video, *common, ok=False)
    assert "does not record how its training video was measured" in res.stderr and "retrain it" in res.stderr


@pytest.mark.slow
def test_calibration_gives_a_driver_with_a_pitch_offset_the_same_predictions(trained, tmp_path):
    """A driver whose resting head pitch is 25 degrees off (camera mounted lower, a taller driver):
    after calibration the windows, hence the probabilities, are the same as without the offset;
    without calibration they are not."""
    from pipeline.apply import predict as P
    from pipeline.apply.model import load_model
    from pipeline.contracts.labels import load_labels

    model = load_model("gru", "alert", trained / "models", trained / "reports")
    assert "pitch" in model.card.features
    csv = subject_csv(trained, "s03")
    entries = load_labels(csv.parent, csv.name, tuple(CLASSES), labelled=False)
    e = next(x for x in entries if x.rel.endswith("normal_1.mp4"))
    feats, _, _ = P.measure(P.MeasureJob(e, model.params, model.window, tmp_path / "m"))
    shifted = feats.copy()
    shifted["pitch"] = (shifted["pitch"] + 25.0).astype(np.float32)

    def probs(table: pd.DataFrame, baseline: str) -> tuple[np.ndarray, pd.DataFrame]:
        o = P.Options(baseline=baseline, calibration_s=2.0)
        base, ready = P.baselines({"v": table}, {"v": "s03"}, model, o)
        tl = P.timeline(table, base["v"], ready["v"], model, e, False)
        return tl[[f"p_{c}" for c in CLASSES]].to_numpy(), tl

    calibrated, tl = probs(feats, "calibrate")
    np.testing.assert_allclose(probs(shifted, "calibrate")[0], calibrated, atol=1e-5)
    assert np.abs(probs(shifted, "none")[0] - probs(feats, "none")[0]).max() > 1e-3
    # the first 2 s with a face are calibration: a window ending in them gets no decision
    assert tl["calibrating"].tolist() == [True, False, False] and tl["label"].tolist()[0] == ""


@pytest.mark.slow
def test_monitor_on_a_file_calibrates_then_decides_as_predict_does(trained, tmp_path):
    """The live path (ring buffer, per-frame landmarks) gives the probabilities of the recorded
    path (predict with the same calibration) on the same recording, and says when it is calibrating."""
    stream = concat_stream(trained, ["s01_normal_1.mp4", "s01_text_1.mp4", "s01_yawn_1.mp4"], tmp_path / "s.mp4")
    out = tmp_path / "pred"
    cli(trained, "predict", str(stream), "--out", str(out), "--model", "stats_gbm", "--baseline", "calibrate")
    tl = pd.read_parquet(out / "s" / "timeline.parquet")
    res = cli(trained, "monitor", str(stream), "--fast", "--decisions", "--model", "stats_gbm")
    events = [json.loads(line) for line in res.stdout.splitlines()[:-1]]
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["frames"] == 135 and summary["calibrated"] is True
    assert events[0] == {"event": "calibrating", "seconds": 2.0, "t": 0.0}
    calibrated = next(e for e in events if e["event"] == "calibrated")
    decisions = [e for e in events if e["event"] == "decision"]
    assert decisions and min(d["t"] for d in decisions) > calibrated["t"] >= 2.0
    live = pd.DataFrame([{"t": d["t"], **{f"p_{c}": d["probs"][c] for c in CLASSES}} for d in decisions])
    both = live.merge(tl.assign(t=tl["end_s"].round(3)), on="t", suffixes=("_live", ""))
    assert len(both) == len(live)
    for c in CLASSES:
        np.testing.assert_allclose(both[f"p_{c}_live"], both[f"p_{c}"], atol=1e-4)
    alerts = [e for e in events if e["event"] == "alert"]
    assert all(set(a) == {"event", "class", "t", "mode", "threshold", "probability"} for a in alerts)


@pytest.mark.slow
def test_monitor_plays_a_file_at_its_own_pace(trained):
    video = str(trained / "data" / "demo" / "videos" / "s02_normal_1.mp4")
    res = cli(trained, "monitor", video, "--seconds", "2", "--model", "stats_lr")
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["event"] == "summary" and summary["frames"] == 30 and summary["wall_s"] >= 1.8
    from pipeline.vision.mediapipe import CHATTER

    assert not [line for line in res.stderr.splitlines() if CHATTER.search(line)]  # no native log lines
    out = trained / "monitor.jsonl"
    res = cli(trained, "monitor", video, "--seconds", "1", "--fast", "--model", "stats_lr", "--out", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert res.stdout == "" and lines[0]["event"] == "calibrating" and lines[-1]["event"] == "summary"
    assert f"appended to {out}" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("model", ["stats_gbm", "gru", "stats_lr"])
def test_export_matches_the_trained_model_and_the_monitor_runs_from_it(trained, model, tmp_path):
    from pipeline.apply.model import from_export, load_model
    from pipeline.contracts.windows import read_windows
    from pipeline.modeling.predictor import Predictor

    file = tmp_path / f"{model}.pt"
    res = cli(trained, "export", "--model", model, "--out", str(file))
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["parity"]["max_abs_diff"] <= 1e-5
    x, _, _, _ = read_windows(trained / "data" / "windows")
    exported = from_export(file)
    np.testing.assert_allclose(exported.proba(x), Predictor.load(trained / "models" / model).proba(x), atol=1e-5)
    folder = load_model(model, "alert", trained / "models", trained / "reports")
    assert exported.thresholds == folder.thresholds and exported.card == folder.card
    assert exported.params.windows.size == 20 and exported.card.model == model
    if model == "stats_gbm":
        video = str(trained / "data" / "demo" / "videos" / "s03_phonecall_1.mp4")
        a = cli(trained, "monitor", video, "--fast", "--decisions", "--model", str(file)).stdout.splitlines()
        b = cli(trained, "monitor", video, "--fast", "--decisions", "--model", model).stdout.splitlines()
        assert a[:-1] == b[:-1] and any('"decision"' in line for line in a)


@pytest.mark.slow
def test_inbox_flow_scores_new_videos_once_and_respects_the_workspace_lock(trained, prefect_server):
    import shutil

    from flows.inbox_flow import score_inbox
    from flows.lock import workspace_lock
    from tests.test_flows import artifact

    box = trained / "data" / "inbox"
    box.mkdir(parents=True, exist_ok=True)
    for name in ("s01_phonecall_1.mp4", "s02_text_1.mp4"):
        shutil.copy(trained / "data" / "demo" / "videos" / name, box / name)
    kw = {"workspace": str(trained), "out": "predictions/inbox", "settle_s": 0.0, "lock_wait_s": 0.5}
    state = score_inbox(**kw, return_state=True)
    assert state.is_completed(), state.message
    res = state.result()
    assert res["status"] == "scored" and res["videos"] == ["s01_phonecall_1.mp4", "s02_text_1.mp4"]
    md = artifact(state.state_details.flow_run_id, "driver-inbox-summary")
    assert "# Driver behaviour: prediction summary" in md and "s02_text_1.mp4" in md
    assert Path(res["out"], "s02_text_1", "timeline.csv").exists()
    assert not list(box.glob(".driver-inbox-*"))  # its listing is gone
    assert score_inbox(**kw) == {"status": "nothing new", "settling": []}  # and it took no lock
    shutil.copy(trained / "data" / "demo" / "videos" / "s03_yawn_1.mp4", box / "later.mp4")
    with workspace_lock(trained, who="test", wait_s=0, log=print):
        state = score_inbox(**kw, return_state=True)
    assert state.name == "Skipped"


def test_params_apply_section_is_checked():
    from pipeline.core.config import parse_params

    with pytest.raises(ConfigError, match=r"apply\.calibration_s"):
        parse_params({"apply": {"calibration_s": 0}})
    with pytest.raises(ConfigError, match=r"schedule\.inbox_mode"):
        parse_params({"schedule": {"inbox_mode": "sometimes"}})


def test_a_slow_monitor_takes_the_newest_frame_and_counts_what_it_skipped():
    import time

    from pipeline.apply.monitor import latest_only

    def source():  # 20 frames at 100 per second
        for i in range(20):
            time.sleep(0.01)
            yield i / 100, i

    stats: dict[str, int] = {}
    got = []
    for _t, i in latest_only(source(), stats):
        got.append(i)
        time.sleep(0.035)  # the consumer handles about 30 a second
    assert got[-1] == 19 and got == sorted(got) and len(got) < 12  # newest first, in order, fewer than 20
    assert stats["dropped"] == 20 - len(got)

    # an error in the source reaches the consumer
    def broken():
        yield 0.0, 0
        raise OSError("camera unplugged")

    with pytest.raises(OSError, match="camera unplugged"):
        list(latest_only(broken(), {}))


def test_the_overlay_draws_the_mesh_the_class_and_the_bars():
    from pipeline.apply.draw import overlay

    img = np.zeros((240, 320, 3), np.uint8)
    face = np.stack([np.linspace(150, 250, 478), np.linspace(100, 200, 478), np.zeros(478)], axis=1)
    overlay(img, face, {"normal": 0.2, "text": 0.8}, "text", scale=1.0)
    assert (img[face[:, 1].astype(int), face[:, 0].astype(int)] == (0, 255, 0)).all()  # every mesh point
    x, y = int(face[0, 0]), int(face[0, 1])
    assert (img[y - 1 : y + 2, x] == (0, 255, 0)).all() and (img[y, x - 1 : x + 2] == (0, 255, 0)).all()  # a dot
    bars = img[18:48, 80:215]
    assert (bars == (0, 200, 255)).all(axis=2).sum(axis=1).max() > 90  # the 0.8 bar is long
    assert img[:14, :60].any()  # the label


@pytest.mark.slow
def test_the_inbox_deployment_is_scheduled_with_the_workspace_settings(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client

    from flows.inbox_flow import score_inbox
    from flows.serve import inbox_kwargs
    from pipeline.core.config import ScheduleParams

    sched = ScheduleParams(inbox="incoming", inbox_every_s=120, inbox_mode="alert")
    kwargs = inbox_kwargs(tmp_path, sched)
    deployment_id = score_inbox.to_deployment(**kwargs).apply()
    with get_client(sync_client=True) as c:
        dep = c.read_deployment(deployment_id)
    assert dep.name == "driver-inbox" and dep.schedules[0].schedule.interval.total_seconds() == 120
    assert dep.parameters["inbox"] == "incoming" and dep.parameters["mode"] == "alert"
    assert dep.parameters["workspace"] == str(tmp_path) and dep.global_concurrency_limit.limit == 1
    with get_client(sync_client=True) as c:
        c.delete_deployment(deployment_id)  # no schedule left behind on the session's server


@pytest.mark.slow
def test_serve_with_inbox_serves_both_deployments_on_one_server_and_stops(tmp_path):
    import signal
    import time

    from flows.serve import api_url, healthy
    from tests.test_flows import _free_port, toy_workspace

    work = toy_workspace(tmp_path / "w")
    port = _free_port()
    env = {k: v for k, v in dvc_env().items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(migrated_prefect_home(tmp_path / "prefect-home"))
    cmd = [sys.executable, "-m", "flows", "serve", "--workspace", str(work), "--port", str(port), "--inbox"]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*cmd, "--no-watch"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            from prefect.client.orchestration import get_client
            from prefect.settings import PREFECT_API_URL, temporary_settings

            names: set[str] = set()
            deadline = time.monotonic() + 180
            while names != {"driver-pipeline", "driver-inbox"} and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                if healthy(api_url(port)):
                    with (
                        temporary_settings(updates={PREFECT_API_URL: api_url(port)}),
                        get_client(sync_client=True) as c,
                    ):
                        names = {d.name for d in c.read_deployments()}
                time.sleep(1)
            assert names == {"driver-pipeline", "driver-inbox"}, log_path.read_text()[-3000:]
            assert (work / "data" / "inbox").is_dir()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(90)


@pytest.mark.slow
def test_monitor_show_without_a_display_is_refused_before_it_starts(trained):
    video = str(trained / "data" / "demo" / "videos" / "s02_normal_1.mp4")
    env = {k: v for k, v in dvc_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "monitor", video, "--show", "--model", "stats_lr"],
        cwd=trained,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "error: --show needs a display" in res.stderr and res.stdout == ""


def test_an_untrained_model_name_lists_the_trained_ones(tmp_path):
    from pipeline.apply.model import load_model
    from pipeline.core.errors import ModelError

    for name in ("gru", "stats_lr"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    with pytest.raises(ModelError) as err:
        load_model("lstm", "alert", tmp_path, tmp_path)
    assert str(err.value) == f"no trained model 'lstm' in {tmp_path} (trained: gru, stats_lr)"
    with pytest.raises(ModelError, match=r"trained: none yet: run `dvc repro`"):
        load_model("lstm", "alert", tmp_path / "empty", tmp_path)
