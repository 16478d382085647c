"""`frames` stage: decode, resample to a fixed fps and letterbox every video.

Output per video: ``data/frames/<video_id>.parquet``, one row per output frame
(``frame, t, src_frame, src_t, stale, luma_mean, luma_std``) with the letterbox transform and
the source facts in the schema metadata, plus ``data/frames/manifest.json`` listing every
labelled video as ``ok`` (with its warnings) or ``quarantined`` with its reason.

Frames are taken as a player shows them: the container's rotation tag is applied, and the
output frame at time k/fps shows the source frame nearest in presentation time (so a
variable frame rate is not re-timed). An output frame with no source frame near it (farther
than one output frame period, or half the source's typical spacing if longer: the recorder
dropped frames there) is marked ``stale``: the landmarks stage does not run on it and its
features are missing, like a frame without a face. Stretches without frames longer than
``frames.max_gap_s`` are reported as warnings.
Sources sparser than ``frames.min_src_fps`` and labelled segments that end after the video
are quarantined with the reason.

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
from pipeline.contracts.labels import Segment, load_labels
from pipeline.core.config import FramesParams, Params, load_params, resolve_workers
from pipeline.core.files import write_json
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.core.runtime import ParamsOpt, run_stage
from pipeline.vision.geometry import Letterbox, letterbox_image
from pipeline.vision.video import VideoError, open_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One video for a worker."""

    video_id: str
    rel: str  # path as written in labels.csv
    path: Path
    out_dir: Path
    frames: FramesParams
    min_frames: int
    segments: tuple[Segment, ...] = ()


SEGMENT_SLACK_S = 1.0  # a labelled segment may end this much after the last frame (rounding, trims)


def source_times(pts: list[float], nominal_fps: float) -> tuple[np.ndarray, str]:
    """Seconds of each decoded frame from the first one, from the container's presentation times
    (``"pts"``); the nominal rate (``"nominal"``) only when those are missing or not increasing."""
    t = np.asarray(pts, np.float64)
    if len(t) > 1 and np.isfinite(t).all() and (np.diff(t) > 0).all():
        return t - t[0], "pts"
    return np.arange(len(t)) / nominal_fps, "nominal"


def resample_times(src_t: np.ndarray, fps: float) -> np.ndarray:
    """Source frame nearest in presentation time to each output time k/fps (the earlier one on a
    tie), while k/fps is inside the video (its last frame lasts one typical frame interval)."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else 1.0 / fps
    duration = float(src_t[-1]) + step
    n = int(np.floor(duration * fps + 1e-9))
    out_t = np.arange(n) / fps
    before = np.searchsorted(src_t, out_t + 1e-9, side="right") - 1
    after = np.minimum(before + 1, len(src_t) - 1)
    later_is_nearer = src_t[after] - out_t < out_t - src_t[before] - 1e-9
    return np.where(later_is_nearer, after, before)


def resample_index(src_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """:func:`resample_times` for a constant-rate source."""
    return resample_times(np.arange(src_frames) / src_fps, fps)


def stale_frames(src_t: np.ndarray, idx: np.ndarray, fps: float) -> np.ndarray:
    """Output frames with no source frame near them: farther from the one they show than one output
    frame period, or than half the source's typical spacing when that is longer (a slow source)."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else 0.0
    tol = max(1.0 / fps, step / 2) * (1 + 1e-6)
    return np.abs(np.arange(len(idx)) / fps - src_t[idx]) > tol


def gaps(src_t: np.ndarray, max_gap_s: float) -> list[tuple[float, float]]:
    """(start, length) in seconds of every stretch without a new frame longer than ``max_gap_s``."""
    d = np.diff(src_t)
    return [(float(src_t[i]), float(d[i])) for i in np.flatnonzero(d > max_gap_s)]


def timing_problems(src_t: np.ndarray, f: FramesParams, segments: tuple[Segment, ...]) -> tuple[str | None, list[str]]:
    """(quarantine reason or None, warnings) for a video's frame times and its labelled segments."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else float("inf")
    rate = 1.0 / step
    if rate < f.min_src_fps:
        return (
            f"too sparse: {rate:.2g} source frames per second (median spacing {step:.2f} s), below "
            f"frames.min_src_fps {f.min_src_fps:g}; at {f.fps:g} fps each frame would be repeated "
            f"{f.fps / rate:.0f} times. Lower frames.min_src_fps to accept it",
            [],
        )
    duration = float(src_t[-1]) + step
    for s in segments:
        if np.isfinite(s.end_s) and s.end_s > duration + SEGMENT_SLACK_S:
            return (
                f"labelled segment '{s.label}' {s.start_s:g}-{s.end_s:g} s ends after the video "
                f"({duration:.2f} s long): seconds vs milliseconds? Fix its start_s/end_s in the labels file",
                [],
            )
    warnings = []
    found = gaps(src_t, f.max_gap_s)
    if found:
        longest = max(found, key=lambda g: g[1])
        warnings.append(
            f"{len(found)} stretch(es) without frames longer than frames.max_gap_s {f.max_gap_s:g} s "
            f"({sum(g[1] for g in found):.1f} s in all, longest {longest[1]:.1f} s at {longest[0]:.1f} s): "
            "output frames there are marked stale and get no landmarks"
        )
    return None, warnings


def plan_video(path: Path, f: FramesParams, min_frames: int, segments: tuple[Segment, ...] = ()) -> tuple[Plan, dict]:
    """Decode the whole video once: validate it, plan the resampling, measure frame QC.

    Raises :class:`VideoError` (the quarantine reason) for unusable input. The returned dict
    holds the per-output-frame QC columns and ``warnings`` (kept in the manifest).
    """
    import cv2

    with open_video(path) as (info, frames):
        w, h = info.width, info.height
        box = Letterbox.fit(w, h, f.canvas)
        iw, ih = box.inner_size
        inner = (slice(box.pad_y, box.pad_y + ih), slice(box.pad_x, box.pad_x + iw))
        canvas_img = np.zeros((box.canvas_h, box.canvas_w, 3), np.uint8)
        means: list[float] = []
        stds: list[float] = []
        pts: list[float] = []
        for t, frame in frames:
            if frame.shape[:2] != (h, w):
                raise VideoError(f"frame size changes mid-video ({frame.shape[1]}x{frame.shape[0]} vs {w}x{h})")
            letterbox_image(frame, box, out=canvas_img)
            m, s = cv2.meanStdDev(cv2.cvtColor(canvas_img[inner], cv2.COLOR_BGR2GRAY))
            means.append(float(m[0, 0]))
            stds.append(float(s[0, 0]))
            pts.append(t)
    decoded = len(means)
    if decoded == 0:
        raise VideoError("no decodable frames (corrupt or truncated video)")
    if info.count > 0 and decoded < 0.9 * info.count:
        raise VideoError(f"truncated: decoded {decoded} of {info.count} frames the header announces")
    src_t, timing = source_times(pts, info.fps)
    reason, warnings = timing_problems(src_t, f, segments)
    if reason:
        raise VideoError(reason)
    if timing == "nominal" and decoded > 1:
        warnings.append(f"no usable presentation times in the file: frames timed at its nominal {info.fps:g} fps")
    idx = resample_times(src_t, f.fps)
    if len(idx) < min_frames:
        raise VideoError(
            f"too short: {len(idx)} frames at {f.fps:g} fps ({src_t[-1]:.2f} s); "
            f"one window needs {min_frames} (params windows.size)"
        )
    qc = {
        "luma_mean": np.asarray(means, np.float32)[idx],
        "luma_std": np.asarray(stds, np.float32)[idx],
        "src_t": src_t[idx],
        "stale": stale_frames(src_t, idx, f.fps),
    }
    src_fps = (decoded - 1) / float(src_t[-1]) if decoded > 1 else info.fps
    return Plan(box, src_fps, decoded, f.fps, idx, info.rotation, timing, qc["stale"]), {**qc, "warnings": warnings}


def process_video(job: Job) -> dict:
    """Worker: plan one video and write its Parquet; returns its manifest entry."""
    vid, rel = job.video_id, job.rel
    try:
        plan, qc = plan_video(job.path, job.frames, job.min_frames, job.segments)
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
    warnings = qc.pop("warnings")
    write_plan(job.out_dir / f"{vid}.parquet", plan, qc, rel)
    entry = {
        "video_id": vid,
        "video": rel,
        "status": "ok",
        "frames": plan.n,
        "src_size": [plan.box.src_w, plan.box.src_h],
        "src_fps": round(plan.src_fps, 4),
        "rotation": plan.rotation,
        "timing": plan.timing,
        "stale_frames": int(qc["stale"].sum()),
    }
    return {**entry, "warnings": warnings} if warnings else entry


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
    jobs = [Job(e.video_id, e.rel, e.path, out_dir, f, params.windows.size, e.segments) for e in entries]
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
        for w in res.get("warnings", []):
            log.warning("%s: %s", res["video"], w)
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
