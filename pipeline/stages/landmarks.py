"""`landmarks` stage: MediaPipe FaceMesh (478 points with iris) and Hands per frame.

For every video the frames stage accepted, the letterboxed frames are regenerated and
streamed through fresh MediaPipe graphs built inside the worker (tracking state starts
empty, so a video's results never depend on the video before it); points are mapped back
to source pixels. Output: the landmarks contract (pipeline/contracts/landmarks.py), one
Parquet per video plus ``manifest.json``. Videos with too few faces are quarantined.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contracts.frames import Plan, iter_frames, read_plan
from pipeline.contracts.landmarks import Hand, LandmarksWriter
from pipeline.core.config import LandmarksParams, Params, load_params, resolve_workers
from pipeline.core.files import read_json, write_json
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.core.runtime import FramesDir, ParamsOpt, run_stage
from pipeline.vision import mediapipe as mpa
from pipeline.vision.driver import DriverPicker
from pipeline.vision.geometry import N_FACE, N_HAND
from pipeline.vision.video import VideoError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One video for a worker."""

    video_id: str
    rel: str  # path as written in labels.csv
    video: Path
    plan: Path
    out_dir: Path
    settings: LandmarksParams


def detect_video(video: Path, plan: Plan, p: LandmarksParams, out: Path, rel: str) -> dict:
    """Run the models over the streamed frames of one video and write its Parquet.

    FaceMesh runs on every frame that is not stale (up to ``max_faces`` faces; the driver is
    picked by :class:`DriverPicker`); Hands runs on every ``hands_every``-th of them and its
    result is held for the frames in between (at most ``hands_every - 1`` frames, never across a
    stale frame). Returns counts; raises :class:`VideoError` when the video must be quarantined.
    """
    import cv2

    cv2.setNumThreads(1)
    box = plan.box
    mul, add = box.normalized_affine()
    space = "source pixels; z on the x scale"
    meta = {
        "letterbox": box.as_dict(),
        "video": rel,
        "fps": plan.fps,
        "space": space,
        "hands": p.hands,
        "hands_every": p.hands_every,
        "max_faces": p.max_faces,
        "driver_region": list(p.driver_region),
    }
    stale = plan.stale if plan.stale is not None else np.zeros(plan.n, bool)
    picker = DriverPicker(box.src_w, box.src_h, tuple(p.driver_region))
    n_face = n_hand = n_multi = 0
    with mpa.quiet_native_stderr():
        fm = mpa.face_mesh(False, p.min_detection_confidence, p.min_tracking_confidence, p.max_faces)
        hd = mpa.hands(p.hands_complexity, p.min_detection_confidence, p.min_tracking_confidence) if p.hands else None
        try:
            with LandmarksWriter(out, meta) as writer:
                found: list[Hand] = []
                since_hands = p.hands_every  # run Hands on the first usable frame
                for k, img in iter_frames(video, plan):
                    if stale[k]:  # the recorder dropped frames here: nothing is measured
                        writer.add(k, k / plan.fps, None, [], 0, stale=True)
                        found, since_hands = [], p.hands_every
                        continue
                    res = fm.process(img)
                    faces = [mpa.landmark_array(f, N_FACE) * mul + add for f in res.multi_face_landmarks or []]
                    n_multi += len(faces) > 1
                    i = picker.pick(faces)
                    face = faces[i] if i is not None else None
                    n_face += face is not None
                    if hd is not None and since_hands >= p.hands_every:
                        since_hands = 0
                        found = []
                        hr = hd.process(img)
                        if hr.multi_hand_landmarks:
                            for hl, hh in zip(hr.multi_hand_landmarks, hr.multi_handedness, strict=False):
                                c = hh.classification[0]
                                found.append((mpa.landmark_array(hl, N_HAND) * mul + add, c.label, float(c.score)))
                    since_hands += 1
                    n_hand += bool(found)
                    writer.add(k, k / plan.fps, face, found, len(faces))
                if n_face == 0:
                    raise VideoError(f"no face found in any of {plan.n} frames")
        finally:
            fm.close()
            if hd is not None:
                hd.close()
    usable = int((~stale).sum())
    return {
        "frames": plan.n,
        "usable_frames": usable,
        "face_frames": n_face,
        "hand_frames": n_hand,
        "multi_face_frames": n_multi,
    }


def process_video(job: Job) -> dict:
    """Worker entry: one video -> Parquet, or a quarantine entry with the reason."""
    entry = {"video_id": job.video_id, "video": job.rel}
    out = job.out_dir / f"{job.video_id}.parquet"
    try:
        stats = detect_video(job.video, read_plan(job.plan), job.settings, out, job.rel)
        frac = stats["face_frames"] / max(1, stats["usable_frames"])
        if frac < job.settings.min_face_fraction:
            out.unlink(missing_ok=True)
            raise VideoError(
                f"face found in only {stats['face_frames']} of {stats['usable_frames']} usable frames ({frac:.0%}); "
                f"landmarks.min_face_fraction is {job.settings.min_face_fraction}"
            )
    except VideoError as exc:
        return {**entry, "status": "quarantined", "stage": "landmarks", "reason": str(exc)}
    except Exception as exc:  # one broken video must not stop the others; the reason is kept
        out.unlink(missing_ok=True)
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
        return {**entry, "status": "quarantined", "stage": "landmarks", "reason": reason}
    return {**entry, "status": "ok", **stats, "face_fraction": round(frac, 4)}


def run(params: Params, frames_dir: Path, out_dir: Path) -> dict:
    """Landmarks for every video the frames stage accepted."""
    p = params.landmarks
    raw = Path(params.data.raw_dir)  # paths were checked against it by the frames stage
    manifest = read_json(frames_dir / "manifest.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        Job(vid, info["video"], raw / info["video"], frames_dir / f"{vid}.parquet", out_dir, p)
        for vid, info in sorted(manifest["videos"].items())
        if info["status"] == "ok"
    ]
    hands = ("on every frame" if p.hands_every == 1 else f"every {p.hands_every} frames") if p.hands else "off"
    log.info("landmarks: %d videos (hands %s; up to %d faces, driver picked by rule)", len(jobs), hands, p.max_faces)
    videos = {}
    address = dask_address(params.parallel.dask_address)
    for res in map_jobs(process_video, jobs, resolve_workers(p.workers), "landmarks", address):
        videos[res["video_id"]] = res
        if res["status"] != "ok":
            log.warning("quarantined %s: %s", res["video"], res["reason"])
        elif res["multi_face_frames"]:
            log.info(
                "%s: several faces in %d frames; the driver was picked by the seat rule",
                res["video"],
                res["multi_face_frames"],
            )
    write_json(out_dir / "manifest.json", {"videos": videos, "hands": p.hands})
    ok = [v for v in videos.values() if v["status"] == "ok"]
    frames = sum(v["frames"] for v in ok)
    return {
        "videos": len(videos),
        "ok": len(ok),
        "quarantined": len(videos) - len(ok),
        "face_rate": round(sum(v["face_frames"] for v in ok) / max(1, frames), 4),
    }


def main(
    params: ParamsOpt = Path("params.yaml"),
    frames_dir: FramesDir = Path("data/frames"),
    out: Path = Path("data/landmarks"),
) -> None:
    """MediaPipe FaceMesh (+ Hands) landmarks per video, in source pixels."""
    run_stage(lambda: run(load_params(params), frames_dir, out))
