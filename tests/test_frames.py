"""Frames stage: resampling, letterbox plan, and every kind of bad input quarantined."""

import numpy as np
import pytest

from pipeline.contracts.frames import Plan, iter_frames, read_plan, write_plan
from pipeline.core.config import FramesParams
from pipeline.core.files import atomic_path, read_json
from pipeline.stages import frames
from pipeline.vision.geometry import letterbox_image
from pipeline.vision.video import VideoError, decode
from tests.conftest import write_clip


def test_resample_index():
    np.testing.assert_array_equal(frames.resample_index(10, 30, 15), [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(frames.resample_index(4, 10, 20), [0, 0, 1, 1, 2, 2, 3, 3])  # repeats
    assert len(frames.resample_index(300, 29.97, 15)) == 150


def test_plan_and_stream_are_the_letterboxed_source(clip_frames, tmp_path):
    import cv2

    src = [cv2.resize(f, (400, 240)) for f in clip_frames["normal"][:12]]  # 5:3 source
    video = write_clip(tmp_path / "v.mp4", src, fps=30)
    plan, qc = frames.plan_video(video, FramesParams(fps=15, canvas=256), min_frames=2)
    assert plan.n == 6 and plan.src_frames == 12
    np.testing.assert_array_equal(plan.src_index, [0, 2, 4, 6, 8, 10])
    assert (plan.box.src_w, plan.box.src_h, plan.box.canvas_w) == (400, 240, 256)
    assert len(qc["luma_mean"]) == 6 and (qc["luma_mean"] > 10).all()
    decoded = [f for _, f in decode(video)]
    got = [(k, img.copy()) for k, img in iter_frames(video, plan, rgb=False)]
    assert [k for k, _ in got] == list(range(6))
    np.testing.assert_array_equal(got[3][1], letterbox_image(decoded[6], plan.box))
    # the plan file round-trips, transform included
    write_plan(tmp_path / "v.parquet", plan, qc, "v.mp4")
    back = read_plan(tmp_path / "v.parquet")
    assert back.box == plan.box
    np.testing.assert_array_equal(back.src_index, plan.src_index)


def test_stream_of_a_shorter_video_raises(clip_frames, tmp_path):
    video = write_clip(tmp_path / "v.mp4", clip_frames["normal"][:6])
    plan, _ = frames.plan_video(video, FramesParams(fps=15, canvas=256), 1)
    longer = Plan(plan.box, plan.src_fps, 10, plan.fps, np.arange(10))
    with pytest.raises(VideoError, match="ended early"):
        list(iter_frames(video, longer))


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_gives_outputs_the_usual_mode_not_mkstemps_0600(tmp_path):
    import os
    import stat
    import subprocess
    import sys

    code = "import sys; from pipeline.core.files import write_json; write_json(sys.argv[1], {'a': 1})"
    for umask in (0o022, 0o002):
        out = tmp_path / f"m{umask:o}.json"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, preexec_fn=lambda m=umask: os.umask(m))
        assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # others can read what a stage wrote


@pytest.fixture
def bad_raw(tmp_path, clip_frames, subject):
    """A raw folder with one good clip and every kind of bad input."""
    from pipeline.stages.demo import _background

    raw = tmp_path / "raw"
    good = write_clip(raw / "videos" / "good.mp4", clip_frames["yawn"])
    (raw / "videos" / "empty.mp4").write_bytes(b"")
    (raw / "videos" / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    data = good.read_bytes()
    (raw / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (raw / "videos" / "notes.txt").write_text("driver said hello\n")
    bg = _background(np.random.default_rng(3), 320, 240)
    write_clip(raw / "videos" / "noface.mp4", [bg] * 20)
    write_clip(raw / "videos" / "short.mp4", clip_frames["normal"][:5])
    (raw / "videos" / "unlabelled.mp4").write_bytes(data)
    rows = [
        "good.mp4,s1,yawn",
        "empty.mp4,s2,normal",
        "random.mp4,s3,normal",
        "truncated.mp4,s4,text",
        "notes.txt,s5,normal",
        "noface.mp4,s6,normal",
        "short.mp4,s7,normal",
    ]
    (raw / "labels.csv").write_text("video,subject,label\n" + "".join(f"videos/{r}\n" for r in rows))
    return raw


def test_bad_inputs_are_quarantined_with_reasons_and_the_rest_goes_on(bad_raw, tmp_path):
    from pipeline.stages import features, landmarks
    from tests.conftest import tiny_params

    p = tiny_params(bad_raw)
    fr, lm = tmp_path / "frames", tmp_path / "landmarks"
    s1 = frames.run(p, fr)
    assert s1 == {"videos": 7, "ok": 2, "quarantined": 5, "ignored_files": 1}
    s2 = landmarks.run(p, fr, lm)
    assert s2["ok"] == 1 and s2["quarantined"] == 1
    s3 = features.run(p, lm, fr, tmp_path / "features.parquet", tmp_path / "quarantine.json")
    assert s3["videos"] == 1
    q = read_json(tmp_path / "quarantine.json")
    reasons = {v["video_id"]: (v["stage"], v["reason"]) for v in q["quarantined"]}
    assert reasons["videos__empty"] == ("frames", "empty file (0 bytes)")
    assert "not a readable video" in reasons["videos__random"][1]
    assert "not a readable video" in reasons["videos__truncated"][1]
    assert "not a readable video" in reasons["videos__notes"][1]
    assert reasons["videos__short"][0] == "frames" and "too short: 5 frames" in reasons["videos__short"][1]
    assert reasons["videos__noface"] == ("landmarks", "no face found in any of 20 frames")
    assert q["ignored_files"] == ["videos/unlabelled.mp4"]
    # quarantined videos leave no output a later stage could trust
    assert sorted(x.name for x in lm.glob("*.parquet")) == ["videos__good.parquet"]
    import pandas as pd

    df = pd.read_parquet(tmp_path / "features.parquet")
    assert set(df["video"]) == {"videos__good"} and (df["label"] == "yawn").all()
