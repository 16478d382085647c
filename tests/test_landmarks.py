"""Landmarks stage with real MediaPipe: source-pixel output, determinism, kill safety."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from pipeline.contracts.landmarks import read_landmarks
from pipeline.core.config import FramesParams, LandmarksParams
from pipeline.vision.frameplan import plan_video
from pipeline.vision.landmarker import detect_video
from tests.conftest import ROOT, write_clip


def test_output_is_in_source_pixels_and_deterministic(clip_frames, subject, tmp_path):
    video = write_clip(tmp_path / "v.mp4", clip_frames["normal"][:12])
    plan, _ = plan_video(video, FramesParams(fps=15, canvas=256), 1)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    stats = detect_video(video, plan, LandmarksParams(hands=True), a, "v.mp4")
    detect_video(video, plan, LandmarksParams(hands=True), b, "v.mp4")
    assert a.read_bytes() == b.read_bytes()
    assert stats["face_frames"] == 12
    lm = read_landmarks(a)
    assert lm["face"].shape == (12, 478, 3) and lm["hands"].shape == (12, 2, 21, 3)
    # first frame: close to the mesh the generator started from (source pixels, 320x240)
    err = np.linalg.norm(lm["face"][0, :468, :2] - subject.ctrl[:468, :2], axis=-1)
    assert np.median(err) < 4.0
    meta = pq.read_schema(a).metadata[b"landmarks"]
    assert b"source pixels" in meta


def test_hands_can_be_switched_off(clip_frames, tmp_path):
    video = write_clip(tmp_path / "v.mp4", clip_frames["phonecall"][:4])
    plan, _ = plan_video(video, FramesParams(fps=15, canvas=256), 1)
    detect_video(video, plan, LandmarksParams(hands=False), tmp_path / "o.parquet", "v")
    lm = read_landmarks(tmp_path / "o.parquet")
    assert np.isnan(lm["hands"]).all() and not lm["hand_present"].any()


def test_killed_stage_leaves_no_trusted_half_output(clip_frames, tmp_path):
    """SIGKILL mid-run: no manifest (later stages refuse to start), every Parquet present is whole."""
    raw = tmp_path / "raw"
    rows = []
    for i in range(6):
        write_clip(raw / "videos" / f"c{i}.mp4", clip_frames["text"])
        rows.append(f"videos/c{i}.mp4,s{i},text\n")
    (raw / "labels.csv").write_text("video,subject,label\n" + "".join(rows))
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data: {{raw_dir: {raw}}}\nframes: {{workers: 1}}\nlandmarks: {{workers: 1}}\nwindows: {{size: 10}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline.stages"]
    subprocess.run(
        [*cmd, "frames", "--params", str(params), "--out", str(tmp_path / "fr")],
        check=True,
        env=env,
        capture_output=True,
    )
    out = tmp_path / "lm"
    proc = subprocess.Popen(
        [*cmd, "landmarks", "--params", str(params), "--frames", str(tmp_path / "fr"), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*.parquet")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    done = list(out.glob("*.parquet"))
    assert 1 <= len(done) < 6
    for f in done:
        assert pq.read_table(f).num_rows == 24
    # SIGKILL gives no chance to clean up: a hidden temp file may stay; the next run clears them
    (out / ".videos__c5.parquet.k1ll3d_x.tmp").write_bytes(b"half")  # as atomic_path names them
    (out / ".notes").write_text("not ours")
    rerun = [*cmd, "landmarks", "--params", str(params), "--frames", str(tmp_path / "fr"), "--out", str(out)]
    subprocess.run(rerun, env=env, check=True, capture_output=True)
    assert not list(out.glob(".*.tmp*")) and (out / ".notes").exists() and (out / "manifest.json").exists()


def test_fast_landmark_reader_matches_the_protobuf_fields():
    from mediapipe.framework.formats import landmark_pb2

    from pipeline.vision.mediapipe import landmark_array

    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 2, (478, 3)).astype(np.float32)
    pts[5] = 0.0  # zeros must still be on the wire (proto2 fields that were set)
    msg = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in pts:
        msg.landmark.add(x=x, y=y, z=z)
    np.testing.assert_array_equal(landmark_array(msg, 478), pts)
    msg.landmark[3].visibility = 0.5  # another layout: the general path must take over
    np.testing.assert_array_equal(landmark_array(msg, 478), pts)


def test_a_stop_while_the_writer_opens_leaves_nothing(tmp_path, monkeypatch):
    """A stop signal can land inside ``__enter__`` (between videos); ``__exit__`` never runs then."""
    import pyarrow.parquet

    from pipeline.contracts.landmarks import LandmarksWriter
    from pipeline.core.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("stopped by SIGTERM")

    monkeypatch.setattr(pyarrow.parquet, "ParquetWriter", stopped)
    out = tmp_path / "v.parquet"
    try:
        with LandmarksWriter(out, {"video": "v"}):
            raise AssertionError("the block must not run")
    except Interrupted:  # checked while the exception lives: a worker exits right here (os._exit)
        assert list(tmp_path.iterdir()) == [], "neither a temp file nor a renamed partial file may remain"
    else:
        raise AssertionError("the stop was swallowed")
