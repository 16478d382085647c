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

from pipeline.contracts.frames import read_plan
from pipeline.core.config import LandmarksParams, Params, load_params, resolve_workers
from pipeline.core.errors import machine_fault
from pipeline.core.files import clear_stale_temps, read_json, write_json
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.core.runtime import FramesDir, ParamsOpt, run_stage
from pipeline.vision.landmarker import detect_video
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
        if (fault := machine_fault(exc)) is not None:  # the machine's, not this video's: stop
            raise fault from exc
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
    clear_stale_temps(out_dir)  # a killed earlier run's hidden temp files
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
