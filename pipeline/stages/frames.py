"""`frames` stage: decode, resample to a fixed fps and letterbox every video.

Output per video: ``data/frames/<video_id>.parquet``, one row per output frame
(``frame, t, src_frame, luma_mean, luma_std``) with the letterbox transform and the
source facts in the schema metadata, plus ``data/frames/manifest.json`` listing every
labelled video as ``ok`` or ``quarantined`` with its reason.

Pixels are not re-encoded: :func:`iter_frames` regenerates the exact letterboxed
frames from the source on demand (the landmarks stage streams them). Re-encoding
measured 1.7-4x the cost of decode + letterbox and would duplicate the data set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.contracts.frames import Plan, write_plan
from pipeline.contracts.labels import load_labels
from pipeline.core.config import Params, load_params, resolve_workers
from pipeline.core.files import write_json
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.core.runtime import ParamsOpt, run_stage
from pipeline.vision.geometry import Letterbox, letterbox_image
from pipeline.vision.video import VideoError, decode, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One video for a worker."""

    video_id: str
    rel: str  # path as written in labels.csv
    path: Path
    out_dir: Path
    fps: float
    canvas: int
    min_frames: int


def resample_index(src_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frame on screen at each output time k/fps (sample and hold), while k/fps < duration."""
    duration = src_frames / src_fps
    n = int(np.floor(duration * fps + 1e-9))
    idx = np.floor(np.arange(n) * src_fps / fps + 1e-6).astype(np.int64)
    return np.minimum(idx, src_frames - 1)


def plan_video(path: Path, fps: float, canvas: int, min_frames: int) -> tuple[Plan, dict[str, np.ndarray]]:
    """Decode the whole video once: validate it, plan the resampling, measure frame QC.

    Raises :class:`VideoError` (the quarantine reason) for unusable input.
    """
    import cv2

    w, h, src_fps, reported = probe(path)
    box = Letterbox.fit(w, h, canvas)
    iw, ih = box.inner_size
    inner = (slice(box.pad_y, box.pad_y + ih), slice(box.pad_x, box.pad_x + iw))
    canvas_img = np.zeros((box.canvas_h, box.canvas_w, 3), np.uint8)
    means: list[float] = []
    stds: list[float] = []
    for frame in decode(path):
        if frame.shape[:2] != (h, w):
            raise VideoError(f"frame size changes mid-video ({frame.shape[1]}x{frame.shape[0]} vs {w}x{h})")
        letterbox_image(frame, box, out=canvas_img)
        m, s = cv2.meanStdDev(cv2.cvtColor(canvas_img[inner], cv2.COLOR_BGR2GRAY))
        means.append(float(m[0, 0]))
        stds.append(float(s[0, 0]))
    decoded = len(means)
    if decoded == 0:
        raise VideoError("no decodable frames (corrupt or truncated video)")
    if reported > 0 and decoded < 0.9 * reported:
        raise VideoError(f"truncated: decoded {decoded} of {reported} frames the header announces")
    idx = resample_index(decoded, src_fps, fps)
    if len(idx) < min_frames:
        raise VideoError(
            f"too short: {len(idx)} frames at {fps:g} fps ({decoded / src_fps:.2f} s); "
            f"one window needs {min_frames} (params windows.size)"
        )
    qc = {"luma_mean": np.asarray(means, np.float32)[idx], "luma_std": np.asarray(stds, np.float32)[idx]}
    return Plan(box, src_fps, decoded, fps, idx), qc


def process_video(job: Job) -> dict:
    """Worker: plan one video and write its Parquet; returns its manifest entry."""
    vid, rel = job.video_id, job.rel
    try:
        plan, qc = plan_video(job.path, job.fps, job.canvas, job.min_frames)
    except VideoError as exc:
        return {"video_id": vid, "video": rel, "status": "quarantined", "stage": "frames", "reason": str(exc)}
    except Exception as exc:  # an unexpected decoder failure must not kill the whole run
        return {
            "video_id": vid,
            "video": rel,
            "status": "quarantined",
            "stage": "frames",
            "reason": f"unexpected error: {type(exc).__name__}: {exc}",
        }
    write_plan(job.out_dir / f"{vid}.parquet", plan, qc, rel)
    return {
        "video_id": vid,
        "video": rel,
        "status": "ok",
        "frames": plan.n,
        "src_size": [plan.box.src_w, plan.box.src_h],
        "src_fps": round(plan.src_fps, 4),
    }


def unlabelled_files(raw_dir: Path, labelled: set[Path], labels_file: str) -> list[str]:
    """Files in the raw folder that labels.csv does not mention (reported, never used)."""
    out = []
    for p in sorted(raw_dir.rglob("*")):
        if p.is_file() and p.resolve() not in labelled and p.name != labels_file and not p.name.startswith("."):
            out.append(p.relative_to(raw_dir).as_posix())
    return out


def run(params: Params, out_dir: Path) -> dict:
    """Every labelled video -> a plan file, or a quarantine entry."""
    entries = load_labels(params.data.raw_dir, params.data.labels_file, params.data.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = params.frames
    jobs = [Job(e.video_id, e.rel, e.path, out_dir, f.fps, f.canvas, params.windows.size) for e in entries]
    log.info(
        "frames: %d labelled videos from %s, resampled to %g fps on a %d px canvas",
        len(jobs),
        params.data.raw_dir,
        f.fps,
        f.canvas,
    )
    videos = {}
    address = dask_address(params.parallel.dask_address)
    for res in map_jobs(process_video, jobs, resolve_workers(params.frames.workers), "frames", address):
        videos[res["video_id"]] = res
        if res["status"] != "ok":
            log.warning("quarantined %s: %s", res["video"], res["reason"])
    raw = Path(params.data.raw_dir).resolve()
    ignored = unlabelled_files(raw, {e.path for e in entries}, params.data.labels_file)
    for f in ignored:
        log.warning("ignored %s: not listed in %s", f, params.data.labels_file)
    write_json(
        out_dir / "manifest.json",
        {"videos": videos, "ignored_files": ignored, "fps": params.frames.fps, "canvas": params.frames.canvas},
    )
    ok = sum(v["status"] == "ok" for v in videos.values())
    return {"videos": len(videos), "ok": ok, "quarantined": len(videos) - ok, "ignored_files": len(ignored)}


def main(params: ParamsOpt = Path("params.yaml"), out: Path = Path("data/frames")) -> None:
    """Validate labels.csv, then plan fixed-fps letterboxed frames for every video."""
    run_stage(lambda: run(load_params(params), out))
