"""Features on landmark sets with known geometry, and through real MediaPipe on real frames."""

import numpy as np
import pytest

from pipeline.contracts.features import REGISTRY
from pipeline.core.config import FeaturesParams
from pipeline.vision import geometry as g
from pipeline.vision.framefeatures import (
    compute_frame_features,
    ear,
    fill_short_gaps,
    hand_distances,
    head_pose,
    mar,
    video_features,
)
from tests.conftest import write_clip


def canonical(face: np.ndarray) -> np.ndarray:
    """The real mesh turned so its own head frame is the identity (a frontal, upright face)."""
    return (face - face.mean(0)) @ g.head_frame(face)


@pytest.mark.parametrize(
    "ypr",
    [
        (0, 0, 0),
        (25, 0, 0),
        (-35, 0, 0),
        (0, 20, 0),
        (0, -25, 0),
        (0, 0, 15),
        (0, 0, -30),
        (20, -15, 10),
        (-30, 10, -12),
    ],
)
def test_rotated_mesh_gives_its_angles(neutral_face, ypr):
    rotated = canonical(neutral_face) @ g.rotation_matrix(*ypr).T + [160, 120, 0]
    np.testing.assert_allclose(head_pose(rotated[None])[0], ypr, atol=1e-6)
    noisy = rotated + np.random.default_rng(1).normal(0, 0.5, rotated.shape)  # half-pixel jitter
    np.testing.assert_allclose(head_pose(noisy[None])[0], ypr, atol=3.0)


def test_ratios_do_not_change_with_head_rotation(neutral_face):
    base = canonical(neutral_face)
    turned = base @ g.rotation_matrix(30, -15, 20).T
    for fn in (lambda f: ear(f, g.EYE_LEFT), lambda f: ear(f, g.EYE_RIGHT), mar):
        np.testing.assert_allclose(fn(turned[None]), fn(base[None]), rtol=1e-9)


def test_open_mouth_raises_mar_and_closed_eyes_lower_ear(subject):
    from pipeline.stages.demo import deform

    rest = deform(subject, 0, 0, 0, 0, 0)[None, :478]
    yawn = deform(subject, 0, 0, 0, 0, 0.8)[None, :478]
    closed = deform(subject, 0, 0, 0, 0.9, 0)[None, :478]
    assert mar(yawn)[0] > mar(rest)[0] + 0.3
    for eye in (g.EYE_LEFT, g.EYE_RIGHT):
        assert ear(closed, eye)[0] < 0.4 * ear(rest, eye)[0]
        assert ear(yawn, eye)[0] == pytest.approx(ear(rest, eye)[0], rel=0.05)


def test_anisotropic_scaling_changes_ratios_but_source_mapping_undoes_it(neutral_face):
    """The 224x224 squash bug: x and y scaled differently distort EAR; mapping back restores it."""
    box = g.Letterbox.fit(320, 240, 224, 224)
    squash = neutral_face.copy()
    squash[:, 0] *= 224 / 320
    squash[:, 1] *= 224 / 240
    e0 = ear(neutral_face[None], g.EYE_LEFT)[0]
    assert abs(ear(squash[None], g.EYE_LEFT)[0] - e0) > 0.1 * e0
    canvas = box.to_canvas(neutral_face[:, :2])
    back = box.to_source(canvas)
    np.testing.assert_allclose(back, neutral_face[:, :2], atol=1e-9)


def test_hand_distances_normalised_by_face_size(neutral_face):
    face = neutral_face[None].astype(float)
    scale = np.linalg.norm(face[0, 33] - face[0, 263])
    hands = np.full((3, 2, 21, 3), np.nan)
    hands[0, 0] = face[0, g.EAR_LEFT] + [0, 0, 0]  # every point of hand 0 on the ear
    hands[1, 1] = face[0, g.NOSE_TIP] + [2 * scale, 0, 0]  # two face widths right of the nose
    to_face, to_ear = hand_distances(np.repeat(face, 3, 0), hands)
    assert to_ear[0] == pytest.approx(0.0, abs=1e-9)
    assert to_face[1] == pytest.approx(2.0, rel=1e-6)
    assert np.isnan(to_face[2]) and np.isnan(to_ear[2])  # no hand: NaN, never invented
    # doubling the picture's resolution keeps the normalised distances
    f2, e2 = hand_distances(np.repeat(face, 3, 0) * 2, hands * 2)
    np.testing.assert_allclose(f2, to_face)
    np.testing.assert_allclose(e2, to_ear)


def test_gap_policy():
    v = np.arange(12, dtype=float)
    present = np.ones(12, bool)
    present[[0, 3, 4, 7, 8, 9, 10]] = False  # lead gap, short gap (2), long gap (4)
    v[~present] = np.nan
    out, filled = fill_short_gaps(v, present, max_gap=3)
    assert np.isnan(out[0]) and not filled[0]  # a leading gap has one neighbour only
    np.testing.assert_allclose(out[3:5], [3, 4])
    assert filled[3:5].all()
    assert np.isnan(out[7:11]).all() and not filled[7:11].any()


def test_missing_face_rows_are_nan_and_flagged(neutral_face):
    face = np.repeat(neutral_face[None], 5, 0).astype(np.float32)
    face[2] = np.nan
    face[4] = np.nan
    hands = np.full((5, 2, 21, 3), np.nan, np.float32)
    lm = {"face": face, "hands": hands, "frame": np.arange(5), "t": np.arange(5) / 15, "stale": np.zeros(5, bool)}
    p = FeaturesParams(max_gap_frames=1)
    df = video_features([{k: v[:3] for k, v in lm.items()}, {k: v[3:] for k, v in lm.items()}], p, 15.0)
    assert list(df.columns) == ["frame", "t", *REGISTRY, "face_filled", "stale"]
    assert df["face_present"].tolist() == [1, 1, 0, 1, 0]
    assert df["face_filled"].tolist() == [0, 0, 1, 0, 0]
    assert np.isfinite(df.loc[2, "ear_left"]) and np.isnan(df.loc[4, "ear_left"])
    assert df["hand_face_dist"].isna().all() and (df["hand_present"] == 0).all()
    raw = compute_frame_features(face, hands)
    assert np.isnan(raw["mar"][2])


def _measure(frames, tmp_path, name, canvas):
    """Real path: write a video, plan it, run MediaPipe, map back, compute features."""
    from pipeline.contracts.landmarks import iter_landmarks, read_landmarks
    from pipeline.core.config import FramesParams, LandmarksParams
    from pipeline.vision.frameplan import plan_video
    from pipeline.vision.landmarker import detect_video

    video = write_clip(tmp_path / f"{name}.mp4", frames)
    plan, _ = plan_video(video, FramesParams(fps=15, canvas=canvas), 1)
    out = tmp_path / f"{name}.parquet"
    detect_video(video, plan, LandmarksParams(hands=False), out, name)
    return video_features(iter_landmarks(out, batch_size=4), FeaturesParams(max_gap_frames=0), 15.0), read_landmarks(
        out
    )


def test_same_face_at_two_resolutions_and_canvases_gives_same_features(clip_frames, tmp_path):
    import cv2

    frames = clip_frames["yawn"][:10]
    base, lm0 = _measure(frames, tmp_path, "base", 320)  # 320x240 on a 320 canvas
    big, lm1 = _measure(
        [cv2.resize(f, (640, 480), interpolation=cv2.INTER_CUBIC) for f in frames], tmp_path, "big", 256
    )  # 2x resolution, smaller canvas
    wide, lm2 = _measure(
        [cv2.copyMakeBorder(f, 0, 0, 53, 54, cv2.BORDER_CONSTANT) for f in frames], tmp_path, "wide", 448
    )  # 16:9 frame (pillarboxed source), larger canvas
    squash, _ = _measure([cv2.resize(f, (224, 224)) for f in frames], tmp_path, "squash", 224)
    assert (base["face_present"] == 1).all() and (big["face_present"] == 1).all() and (wide["face_present"] == 1).all()
    # landmarks land on the same source pixels
    assert np.nanmedian(np.abs(lm1["face"][..., :2] / 2 - lm0["face"][..., :2])) < 1.5
    assert np.nanmedian(np.abs(lm2["face"][..., :2] - [53, 0] - lm0["face"][..., :2])) < 1.5
    tol = {
        "ear_left": 0.03,
        "ear_right": 0.03,
        "mar": 0.04,
        "yaw": 3.0,
        "pitch": 3.0,
        "roll": 2.0,
        "gaze_x": 0.04,
        "gaze_y": 0.04,
    }
    for other in (big, wide):
        for k, t in tol.items():
            assert abs(other[k].mean() - base[k].mean()) < t, (k, other[k].mean(), base[k].mean())
    # and the test would catch the squash bug: treating 224x224 pixels as square distorts ratios
    assert (
        abs(squash["ear_left"].mean() - base["ear_left"].mean()) > 0.03
        or abs(squash["mar"].mean() - base["mar"].mean()) > 0.04
    )


def test_real_mediapipe_follows_commanded_yaw_and_mouth(subject, tmp_path):
    """Warp the real face to known yaw / mouth opening; real MediaPipe must track them."""
    from pipeline.stages.demo import deform, paint, warp

    frames, yaws = [], [-30, -15, 0, 15, 30]
    for y in yaws:
        dst = deform(subject, y, 0, 0, 0, 0)
        frames.append(warp(subject, dst))
    for m in (0.0, 0.8):
        dst = deform(subject, 0, 0, 0, 0, m)
        img = warp(subject, dst)
        paint(img, subject, dst, 0, m, 0)
        frames.append(img)
    feats, _ = _measure(frames, tmp_path, "sweep", 320)
    measured = feats["yaw"].to_numpy()[:5]
    assert np.all(np.diff(measured) > 0), measured
    slope = np.polyfit(yaws, measured, 1)[0]
    assert 0.5 < slope < 1.5, slope
    assert feats["mar"].iloc[6] > feats["mar"].iloc[5] + 0.3
