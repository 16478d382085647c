"""Real-world video: rotation tags, variable frame rate, sparse input, several faces, Hands every Nth frame.

Clips are muxed with PyAV (FFmpeg inside the wheel): display-matrix rotation and per-frame
presentation times, as phones and dash-cams write them. Decoding is the pipeline's own.
"""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest

from pipeline.contracts.frames import iter_frames
from pipeline.contracts.landmarks import iter_landmarks, read_landmarks
from pipeline.core.config import FeaturesParams, FramesParams, LandmarksParams, parse_params
from pipeline.core.files import read_json
from pipeline.stages import frames
from pipeline.vision.driver import DriverPicker
from pipeline.vision.framefeatures import video_features
from pipeline.vision.landmarker import detect_video
from pipeline.vision.video import VideoError, probe


def write_av(path: Path, rgb: list[np.ndarray], times: list[float], rotation: int = 0) -> Path:
    """MPEG-4 in .mp4 with the given presentation times (s) and display rotation (degrees, counter-clockwise)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=1000)
        h, w = rgb[0].shape[:2]
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qscale": "2"}
        if rotation:
            s.set_display_rotation(rotation)
        for img, t in zip(rgb, times, strict=True):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts, vf.time_base = round(t * 1000), fractions.Fraction(1, 1000)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def features_of(video: Path, tmp_path: Path, name: str, lp: LandmarksParams | None = None, fp=None):
    fp = fp or FramesParams(fps=15, canvas=256)
    plan, _ = frames.plan_video(video, fp, 1)
    out = tmp_path / f"{name}.parquet"
    detect_video(video, plan, lp or LandmarksParams(hands=False), out, name)
    return video_features(iter_landmarks(out), FeaturesParams(), fp.fps), plan, out


# --- rotation -------------------------------------------------------------------------------
def test_a_sideways_phone_clip_with_a_rotation_tag_gives_the_upright_features(clip_frames, tmp_path):
    src = clip_frames["normal"][:16]
    times = [i / 15 for i in range(len(src))]
    upright = write_av(tmp_path / "upright.mp4", src, times)
    # stored turned 90 degrees clockwise; the tag says "turn it back counter-clockwise", as a phone writes it
    sideways = write_av(tmp_path / "sideways.mp4", [np.rot90(f, k=-1) for f in src], times, rotation=90)
    info = probe(sideways)
    assert (info.width, info.height, info.rotation) == (320, 240, 270)  # upright size, clockwise turn
    a, plan_a, _ = features_of(upright, tmp_path, "a")
    b, plan_b, _ = features_of(sideways, tmp_path, "b")
    assert plan_b.box == plan_a.box and plan_b.rotation == 270
    assert a["face_present"].all() and b["face_present"].all()
    assert np.abs(b["roll"] - a["roll"]).max() < 3.0, "roll must be the upright one, not -90"
    assert np.abs(b["yaw"] - a["yaw"]).max() < 3.0 and np.abs(b["pitch"] - a["pitch"]).max() < 3.0
    assert np.abs(b["ear_left"] - a["ear_left"]).max() < 0.03


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_every_rotation_tag_is_undone_pixel_for_pixel_in_layout(tmp_path, rotation):
    img = np.zeros((60, 80, 3), np.uint8)
    img[:20, :40] = 255  # a bright block in the upright top-left corner
    stored = np.rot90(img, k=rotation // 90)  # np.rot90 turns counter-clockwise; the tag turns it back
    video = write_av(tmp_path / "r.mp4", [stored] * 3, [0, 0.1, 0.2], rotation=(360 - rotation) % 360)
    plan, _ = frames.plan_video(video, FramesParams(fps=10, canvas=80, min_src_fps=1), 1)
    assert (plan.box.src_w, plan.box.src_h) == (80, 60)
    _, frame = next(iter_frames(video, plan, rgb=False))
    inner = frame[plan.box.pad_y : plan.box.pad_y + 60, :80]
    assert inner[:20, :40].mean() > 200 and inner[30:, 40:].mean() < 40


# --- variable frame rate -----------------------------------------------------------------------
def vfr_clip(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """10 fps with a 2-s hole every 4 s (the recorder dropped frames); each frame's two grey halves code its index."""
    times = [t for k in range(3) for t in np.arange(0, 2, 0.1) + 4 * k]
    rgb = [np.full((48, 64, 3), 20, np.uint8) for _ in times]
    for i, img in enumerate(rgb):
        img[:, :32], img[:, 32:] = 20 + 30 * (i // 8), 20 + 30 * (i % 8)
    return write_av(tmp_path / "vfr.mp4", rgb, times), np.asarray(times)


def test_variable_frame_rate_follows_presentation_times_and_holes_are_marked_stale(tmp_path):
    video, times = vfr_clip(tmp_path)
    fp = FramesParams(fps=15, canvas=64)
    plan, qc = frames.plan_video(video, fp, 1)
    assert plan.timing == "pts" and plan.src_frames == len(times)
    t = np.arange(plan.n) / fp.fps
    assert abs(t[-1] - 9.9) < 0.1  # the real length (10 s), not 60 frames at the average rate
    shown = times[plan.src_index]
    np.testing.assert_allclose(qc["src_t"], shown, atol=1e-3)
    fresh = ~qc["stale"]
    assert (np.abs(t[fresh] - shown[fresh]) <= 1 / fp.fps + 1e-6).all()  # within one output frame of its source frame
    nearest = np.abs(t[:, None] - times[None]).min(axis=1)
    np.testing.assert_array_equal(qc["stale"], nearest > 1 / fp.fps + 1e-6)  # the holes, and only them
    assert qc["stale"].sum() >= 2 * 27  # ~1.9 s in each of the two holes
    # the decoded pixels are the planned source frames
    y0 = plan.box.pad_y
    for k, img in iter_frames(video, plan):
        hi, lo = (round((float(img[y0 + 8 : y0 + 40, a : a + 24].mean()) - 20) / 30) for a in (4, 36))
        assert 8 * hi + lo == plan.src_index[k]
    # labels by time: a segment 4.0-6.0 s covers exactly the frames showing source frames from 4.0-6.0 s
    seg = (t >= 4.0) & (t < 6.0)
    assert (shown[seg] >= 4.0 - 1e-6).all() and (shown[seg] < 6.0).all()
    assert "stretch(es) without frames" in qc["warnings"][0]


def test_stale_frames_get_no_landmarks_and_no_features(clip_frames, tmp_path):
    src = clip_frames["normal"][:24]
    times = [i / 15 for i in range(12)] + [2.0 + i / 15 for i in range(12)]  # a 1.2-s hole
    video = write_av(tmp_path / "hole.mp4", src, times)
    df, plan, out = features_of(video, tmp_path, "hole")
    stale = df["stale"].to_numpy() > 0
    assert stale.sum() >= 8 and plan.stale is not None and (plan.stale == stale).all()
    assert (df.loc[stale, "face_present"] == 0).all() and df.loc[stale, "yaw"].isna().all()
    assert (df.loc[~stale, "face_present"] == 1).all()
    assert (df.loc[stale, "face_filled"] == 0).all()  # longer than features.max_gap_frames: not filled
    assert read_landmarks(out)["stale"].sum() == stale.sum()


def test_nominal_timing_is_used_and_said_when_the_container_has_no_usable_times():
    t, how = frames.source_times([0.0, 0.0, 0.0], 25)
    assert how == "nominal" and np.allclose(t, [0, 0.04, 0.08])
    t, how = frames.source_times([1.0, 1.1, 1.3], 25)
    assert how == "pts" and np.allclose(t, [0, 0.1, 0.3])


def test_constant_rate_resampling_is_unchanged():
    np.testing.assert_array_equal(frames.resample_index(10, 30, 15), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(frames.resample_index(4, 10, 20), [0, 0, 1, 1, 2, 2, 3, 3])
    assert len(frames.resample_index(300, 29.97, 15)) == 150


# --- sparse and inconsistent input -------------------------------------------------------------
def test_a_one_fps_time_lapse_is_quarantined_with_the_reason(tmp_path):
    rgb = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(10)]
    video = write_av(tmp_path / "lapse.mp4", rgb, list(range(10)))
    with pytest.raises(VideoError, match=r"too sparse: 1 source frames per second.*frames.min_src_fps 5"):
        frames.plan_video(video, FramesParams(), 1)
    plan, _ = frames.plan_video(video, FramesParams(min_src_fps=0.5), 1)  # the user can accept it
    assert plan.n == 150


def test_labels_ending_after_the_video_quarantine_it_and_warnings_reach_the_validation_report(tmp_path):
    from pipeline.stages.validate import quarantine_facts

    raw = tmp_path / "raw"
    rgb = [np.full((48, 64, 3), 100, np.uint8)] * 60
    write_av(raw / "ok.mp4", rgb, [i / 15 for i in range(60)])
    write_av(raw / "ms.mp4", rgb, [i / 15 for i in range(60)])
    write_av(raw / "late.mp4", rgb, [i / 15 for i in range(60)])
    hole = [i / 15 for i in range(30)] + [4 + i / 15 for i in range(30)]
    write_av(raw / "hole.mp4", rgb, hole)
    (raw / "labels.csv").write_text(
        "video,subject,label,start_s,end_s\n"
        "ok.mp4,s1,normal,0,4.2\n"
        "ms.mp4,s2,normal,0,4000\n"  # milliseconds
        "late.mp4,s4,yawn,3500,\n"  # milliseconds, open-ended: it would label nothing
        "hole.mp4,s3,normal,,\n"
    )
    params = parse_params({"data": {"raw_dir": str(raw)}, "frames": {"workers": 1}, "windows": {"size": 10}})
    frames.run(params, tmp_path / "fr")
    videos = read_json(tmp_path / "fr" / "manifest.json")["videos"]
    assert videos["ok"]["status"] == "ok" and "warnings" not in videos["ok"]
    assert videos["ms"]["status"] == "quarantined"
    assert "segment 'normal' 0-4000 s ends after the video (4.00 s long)" in videos["ms"]["reason"]
    assert videos["late"]["status"] == "quarantined"
    assert "segment 'yawn' 3500-inf s starts after the video ends (4.00 s long)" in videos["late"]["reason"]
    assert videos["hole"]["status"] == "ok" and videos["hole"]["stale_frames"] > 0
    [warning] = videos["hole"]["warnings"]
    assert "longest 2.1 s at 1.9 s" in warning
    # the features stage carries the warning into data/quarantine.json, the validate stage into its report
    from pipeline.contracts.quarantine import write_quarantine

    q = tmp_path / "quarantine.json"
    write_quarantine(q, [], [], [{"video_id": "hole", "video": "hole.mp4", "stage": "frames", "warning": warning}])
    facts = quarantine_facts(q)
    assert facts["input warnings"].startswith("1: hole.mp4 (frames: 1 stretch(es) without frames")


# --- the driver among several faces -------------------------------------------------------------
@pytest.fixture(scope="session")
def passenger():
    from pipeline.stages import demo

    fm = demo._facemesh_static()
    try:
        name, photo = demo.face_sources()[4]  # a face from skimage's LFW subset
        sub = demo.make_subject(name, photo, np.random.default_rng(0), 320, 240, fm)
    finally:
        fm.close()
    assert sub is not None
    return demo.render_clip(sub, "normal", 3, 24, 15)


def test_the_driver_is_kept_when_a_second_face_comes_and_goes(clip_frames, passenger, tmp_path):
    driver = clip_frames["normal"][:24]
    blank = np.full_like(passenger[0], 60)
    both = [
        np.hstack([d, p if 4 <= i < 10 or 15 <= i < 21 else blank])
        for i, (d, p) in enumerate(zip(driver, passenger, strict=True))
    ]
    times = [i / 15 for i in range(24)]
    alone = [np.hstack([d, blank]) for d in driver]
    a, _, _ = features_of(write_av(tmp_path / "alone.mp4", alone, times), tmp_path, "alone")
    b, _, out = features_of(write_av(tmp_path / "both.mp4", both, times), tmp_path, "both")
    import pyarrow.parquet as pq

    counts = pq.read_table(out, columns=["face_count"]).column("face_count").to_numpy()
    assert counts.max() == 2, "the test clip must really show two faces"
    lm = read_landmarks(out)
    assert (lm["face"][:, :, 0].mean(axis=1) < 320).all(), "every frame keeps the driver (left seat)"
    for col, tol in (("yaw", 3.0), ("roll", 3.0), ("ear_left", 0.03), ("mar", 0.05)):
        assert np.abs(b[col] - a[col]).max() < tol, col


def face_at(cx: float, cy: float, width: float) -> np.ndarray:
    f = np.zeros((478, 3))
    f[:, 0] = np.linspace(cx - width / 2, cx + width / 2, 478)
    f[:, 1] = cy
    return f


def test_driver_rule_seat_region_continuity_and_size():
    p = DriverPicker(640, 480)
    assert p.pick([face_at(500, 240, 80), face_at(150, 240, 120)]) == 1  # first frame: the largest
    assert p.pick([face_at(160, 250, 110), face_at(450, 240, 200)]) == 0  # a bigger face appears: the driver stays
    assert p.pick([face_at(450, 240, 200)]) == 0  # driver lost: the largest face in the seat region takes over
    assert p.pick([face_at(160, 250, 110), face_at(452, 240, 200)]) == 1  # and keeps it (use driver_region)
    seat = DriverPicker(640, 480, (0.5, 0.0, 1.0, 1.0))  # right-hand-drive car: the driver sits in the right half
    assert seat.pick([face_at(150, 240, 200), face_at(500, 240, 80)]) == 1
    assert seat.pick([face_at(150, 240, 200)]) is None


# --- Hands every Nth frame -----------------------------------------------------------------------
def test_hands_run_every_nth_frame_and_are_held_in_between(clip_frames, tmp_path):
    video = write_av(tmp_path / "text.mp4", clip_frames["text"], [i / 15 for i in range(24)])
    plan, _ = frames.plan_video(video, FramesParams(fps=15, canvas=320), 1)
    detect_video(video, plan, LandmarksParams(hands=True, hands_every=5), tmp_path / "h.parquet", "h")
    hands = read_landmarks(tmp_path / "h.parquet")["hands"]
    seen = np.isfinite(hands[:, 0, 0, 0])
    assert seen[:10].all(), "the clip must show a hand"
    for k in range(24):
        np.testing.assert_array_equal(hands[k], hands[k - k % 5])  # held from the last run
    assert not np.array_equal(hands[0], hands[5])  # and replaced at the next one
