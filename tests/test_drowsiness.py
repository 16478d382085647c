"""Drowsiness features on synthetic EAR/MAR traces with known events, and the One Euro filter."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.contracts.features import DROWSINESS, REGISTRY
from pipeline.core.config import FeaturesParams
from pipeline.vision.drowsiness import blinks, drowsiness_features, eye_closure
from pipeline.vision.smoothing import one_euro

FPS = 30.0
OPEN = 0.30
# one blink, frame by frame: closing over 3 frames, shut 2, opening over 4 (EAR values)
BLINK = [0.22, 0.12, 0.04, 0.03, 0.04, 0.10, 0.17, 0.23, 0.28]


def eye_trace(seconds: float, blink_at: list[float], closed: tuple[float, float] | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    ear = OPEN + rng.normal(0, 0.004, n)
    for t in blink_at:
        i = int(t * FPS)
        ear[i : i + len(BLINK)] = BLINK
    if closed:
        ear[int(closed[0] * FPS) : int(closed[1] * FPS)] = 0.03  # a microsleep: eyes shut for seconds
    return ear


def test_blinks_are_found_with_their_duration_amplitude_and_velocities():
    at = [2.0, 7.5, 13.0, 21.0]
    ear = eye_trace(30, at)
    found = blinks(eye_closure(ear), FPS, FeaturesParams())
    assert [round(b.start / FPS, 1) for b in found] == [round(t + 1 / FPS, 1) for t in at]
    open_level = np.percentile(ear, 90)
    closure = 1 - np.array(BLINK) / open_level
    for b in found:
        assert b.duration_s == pytest.approx(np.sum(closure >= 0.5) / FPS)  # 5 frames at least half closed
        assert b.amplitude == pytest.approx(closure.max(), abs=0.02)
        # closing: from the open eye to the peak in 4 frames; opening: from the peak back in 5
        assert b.close_vel == pytest.approx((closure.max() - (1 - ear[b.start - 2] / open_level)) / 4 * FPS, rel=0.15)
        assert b.close_vel > b.open_vel > 0  # eyes close faster than they open


def test_a_long_closure_is_not_a_blink_but_counts_in_perclos():
    ear = eye_trace(60, [5.0, 15.0, 25.0], closed=(40.0, 43.0))
    p = FeaturesParams(drowsy_window_s=60.0)
    out = drowsiness_features(ear, np.zeros_like(ear), FPS, p)
    assert len(blinks(eye_closure(ear), FPS, p)) == 3
    closed_frames = 3 * np.sum(1 - np.array(BLINK) / np.percentile(ear, 90) >= 0.8) + 3 * FPS
    assert out["perclos"][-1] == pytest.approx(closed_frames / len(ear), abs=1 / len(ear))
    assert out["perclos"][int(39 * FPS)] < 0.01 < 0.04 < out["perclos"][int(43 * FPS)]
    assert out["blink_rate"][-1] == pytest.approx(3.0)  # per minute over the 60-s window
    assert out["blink_duration"][-1] == pytest.approx(5 / FPS)
    assert np.isnan(out["blink_duration"][int(4 * FPS)])  # no blink yet: undefined, not 0


def test_features_are_causal_given_the_open_eye_level():
    ear = eye_trace(20, [3.0, 12.0])
    mar = np.full_like(ear, 0.1)
    p = FeaturesParams(drowsy_window_s=10.0)
    a = drowsiness_features(ear, mar, FPS, p)
    later = ear.copy()
    later[int(10 * FPS) :] = eye_trace(10, [4.0], seed=3)  # a different future, same open level
    b = drowsiness_features(later, mar, FPS, p)
    cut = int(9 * FPS)
    for k in a:
        np.testing.assert_allclose(a[k][:cut], b[k][:cut], rtol=0.02, equal_nan=True, err_msg=k)


def test_yawns_need_a_wide_mouth_for_long_enough_and_are_flagged_causally():
    n = int(60 * FPS)
    mar = np.full(n, 0.1)
    mar[int(10 * FPS) : int(13 * FPS)] = 0.7  # a 3-s yawn
    for t in (20, 21, 30):  # talking and laughing: wide, but short
        mar[int(t * FPS) : int((t + 0.4) * FPS)] = 0.65
    mar[int(45 * FPS) : int(47.5 * FPS)] = 0.8  # a 2.5-s yawn
    p = FeaturesParams(drowsy_window_s=60.0, yawn_mar=0.5, yawn_min_s=1.0)
    out = drowsiness_features(np.full(n, OPEN), mar, FPS, p)
    flagged = out["yawning"] > 0
    assert flagged[int(11 * FPS) : int(13 * FPS)].all() and not flagged[int(10 * FPS) : int(11 * FPS) - 1].any()
    assert not flagged[int(14 * FPS) : int(44 * FPS)].any()  # talking is not yawning
    assert out["yawn_s"][int(13 * FPS) - 1] == pytest.approx(3.0)
    assert out["yawn_rate"][-1] == pytest.approx(2.0)
    assert out["yawn_rate"][int(30 * FPS)] == pytest.approx(1 / 0.5, rel=0.01)  # 1 yawn in the first half minute


def test_no_face_frames_stay_missing_and_registry_ranges_hold():
    ear = eye_trace(20, [3.0, 9.0])
    ear[int(5 * FPS) : int(6 * FPS)] = np.nan
    out = drowsiness_features(ear, np.full_like(ear, 0.2), FPS, FeaturesParams(drowsy_window_s=10.0))
    assert set(out) == set(DROWSINESS)
    for k, v in out.items():
        f = REGISTRY[k]
        v = v[np.isfinite(v)]
        assert ((v >= f.lo) & (v <= f.hi)).all(), k
    empty = drowsiness_features(np.full(30, np.nan), np.full(30, np.nan), FPS, FeaturesParams())
    assert np.isnan(empty["perclos"]).all() and (empty["blink_rate"] == 0).all()


# --- One Euro ---------------------------------------------------------------------------------
def test_one_euro_calms_a_still_face_without_lagging_a_head_turn():
    fps = 15.0
    rng = np.random.default_rng(0)
    still = rng.normal(0, 1.0, 150)  # landmark jitter: about 1 degree
    smooth = one_euro(still, fps)
    assert np.std(np.diff(smooth)) < 0.35 * np.std(np.diff(still))
    # a real turn: 0 -> 60 degrees in 0.5 s, then held; with the same jitter
    turn = np.r_[np.zeros(30), np.linspace(0, 60, 8), np.full(40, 60.0)] + rng.normal(0, 1.0, 78)
    out = one_euro(turn, fps)
    crossing = int(np.argmax(turn > 30))
    assert int(np.argmax(out > 30)) - crossing <= 2, "lags the turn by more than two frames"
    assert abs(out[-20:].mean() - 60) < 1.0


def test_one_euro_keeps_gaps_and_restarts_after_them():
    x = np.r_[np.zeros(5), np.nan, np.nan, np.full(5, 10.0)]
    out = one_euro(x, 15.0)
    assert np.isnan(out[5:7]).all() and out[7] == 10.0  # no smoothing across a missing face


def test_the_windows_stage_selects_drowsiness_features_like_any_other():
    from pipeline.core.config import parse_params
    from pipeline.stages import windows as W
    from tests.test_windows import CLASSES, fake_features

    df = fake_features(n_subjects=6, frames=30)
    ear = np.where(np.arange(len(df)) % 15 < 2, 0.05, OPEN)  # a blink every second
    for k, v in drowsiness_features(ear, np.full(len(df), 0.1), 15.0, FeaturesParams(drowsy_window_s=1.0)).items():
        df[k] = v.astype(np.float32)
    params = parse_params({"windows": {"size": 10, "stride": 5, "features": ["perclos", "blink_rate", "yawning"]}})
    w, meta = W.build(df, params.windows, CLASSES)
    assert meta["features"] == ["perclos", "blink_rate", "yawning"] and w.x.shape[1:] == (10, 3)
