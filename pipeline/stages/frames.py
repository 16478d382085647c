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

from pipeline.contracts.frames import write_plan
from pipeline.contracts.labels import Segment, load_labels
from pipeline.core.config import FramesParams, Params, load_params, resolve_workers
from pipeline.core.errors import machine_fault
from pipeline.core.files import clear_stale_temps, write_json
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.core.runtime import ParamsOpt, run_stage
from pipeline.vision.frameplan import (  # noqa: F401 (re-exported: the stage's planning functions)
    gaps,
    plan_video,
    resample_index,
    resample_times,
    source_times,
    stale_frames,
    timing_problems,
)
from pipeline.vision.video import VideoError

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


def process_video(job: Job) -> dict:
    """Worker: plan one video and write its Parquet; returns its manifest entry."""
    vid, rel = job.video_id, job.rel
    try:
        plan, qc = plan_video(job.path, job.frames, job.min_frames, job.segments)
    except VideoError as exc:
        return {"video_id": vid, "video": rel, "status": "quarantined", "stage": "frames", "reason": str(exc)}
    except Exception as exc:  # an unexpected decoder failure must not kill the whole run
        if (fault := machine_fault(exc)) is not None:  # the machine's, not this video's: stop
            raise fault from exc
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
    d = params.data
    entries = load_labels(d.raw_dir, d.labels_file, d.classes, label_map=d.label_map)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_temps(out_dir)  # a killed earlier run's hidden temp files
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
