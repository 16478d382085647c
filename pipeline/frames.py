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

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.geometry import Letterbox, letterbox_image

log = logging.getLogger(__name__)


class VideoError(Exception):
    """A video that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class Plan:
    """How one source video becomes fixed-fps letterboxed frames."""

    box: Letterbox
    src_fps: float
    src_frames: int  # frames actually decoded
    fps: float
    src_index: np.ndarray  # (n,) source frame index for each output frame

    @property
    def n(self) -> int:
        return len(self.src_index)


def probe(path: Path) -> tuple[int, int, float, int]:
    """(width, height, fps, reported frame count) or :class:`VideoError`."""
    import cv2

    if not path.exists():
        raise VideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError("not a readable video: OpenCV could not open it (corrupt, truncated or not a video)")
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        raise VideoError("not a readable video: no frame size (no video stream?)")
    if not (0 < fps < 1000):
        raise VideoError(f"no usable frame rate in the file (reported {fps}); re-mux it with a fixed fps")
    return w, h, fps, count


def resample_index(src_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """Source frame on screen at each output time k/fps (sample and hold), while k/fps < duration."""
    duration = src_frames / src_fps
    n = int(np.floor(duration * fps + 1e-9))
    idx = np.floor(np.arange(n) * src_fps / fps + 1e-6).astype(np.int64)
    return np.minimum(idx, src_frames - 1)


def _decode(path: Path) -> Iterator[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def iter_frames(path: Path, plan: Plan, rgb: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``(output index, letterboxed frame)``; one source frame in memory at a time.

    The yielded array is reused between iterations: copy it if you keep it.
    """
    import cv2

    canvas = np.zeros((plan.box.canvas_h, plan.box.canvas_w, 3), np.uint8)
    k = 0
    for i, frame in enumerate(_decode(path)):
        if k >= plan.n:
            return
        if plan.src_index[k] != i:
            continue
        letterbox_image(frame, plan.box, out=canvas)
        out = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB) if rgb else canvas
        while k < plan.n and plan.src_index[k] == i:
            yield k, out
            k += 1
    if k < plan.n:
        raise VideoError(f"video ended early: decoded {k} of {plan.n} planned frames")


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
    for frame in _decode(path):
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


def plan_table(plan: Plan, qc: dict[str, np.ndarray], rel: str):
    """The per-video Parquet table (pyarrow) with the transform in its metadata."""
    import pyarrow as pa

    table = pa.table(
        {
            "frame": pa.array(np.arange(plan.n, dtype=np.int32)),
            "t": pa.array(np.arange(plan.n) / plan.fps),
            "src_frame": pa.array(plan.src_index.astype(np.int32)),
            "luma_mean": pa.array(qc["luma_mean"]),
            "luma_std": pa.array(qc["luma_std"]),
        }
    )
    meta = {
        "letterbox": plan.box.as_dict(),
        "src_fps": plan.src_fps,
        "src_frames": plan.src_frames,
        "fps": plan.fps,
        "video": rel,
    }
    return table.replace_schema_metadata({b"frames": json.dumps(meta, sort_keys=True).encode()})


def read_plan(path: Path) -> Plan:
    """Load a plan written by this stage."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["src_frame"])
    meta = json.loads(table.schema.metadata[b"frames"])
    return Plan(
        Letterbox(**meta["letterbox"]),
        meta["src_fps"],
        meta["src_frames"],
        meta["fps"],
        table.column("src_frame").to_numpy().astype(np.int64),
    )


def process_video(job: tuple[str, str, Path, Path, float, int, int]) -> dict:
    """Worker: plan one video and write its Parquet; returns its manifest entry."""
    from pipeline.io import write_table

    vid, rel, path, out_dir, fps, canvas, min_frames = job
    try:
        plan, qc = plan_video(path, fps, canvas, min_frames)
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
    write_table(plan_table(plan, qc, rel), out_dir / f"{vid}.parquet")
    return {
        "video_id": vid,
        "video": rel,
        "status": "ok",
        "frames": plan.n,
        "src_size": [plan.box.src_w, plan.box.src_h],
        "src_fps": round(plan.src_fps, 4),
    }


VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


def unlabelled_files(raw_dir: Path, labelled: set[Path], labels_file: str) -> list[str]:
    """Files in the raw folder that labels.csv does not mention (reported, never used)."""
    out = []
    for p in sorted(raw_dir.rglob("*")):
        if p.is_file() and p.resolve() not in labelled and p.name != labels_file and not p.name.startswith("."):
            out.append(p.relative_to(raw_dir).as_posix())
    return out


def run(params: Params, out_dir: Path) -> dict:
    """Stage entry: every labelled video -> a plan file, or a quarantine entry."""
    from pipeline.config import resolve_workers
    from pipeline.io import write_json
    from pipeline.labels import load_labels
    from pipeline.parallel import dask_address, map_videos

    entries = load_labels(params.data.raw_dir, params.data.labels_file, params.data.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (e.video_id, e.rel, e.path, out_dir, params.frames.fps, params.frames.canvas, params.windows.size)
        for e in entries
    ]
    videos = {}
    address = dask_address(params.parallel.dask_address)
    for res in map_videos(process_video, jobs, resolve_workers(params.frames.workers), "frames", address):
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
