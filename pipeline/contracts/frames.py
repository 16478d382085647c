"""The frame-plan contract: ``data/frames/<video_id>.parquet`` + ``manifest.json``.

One row per output frame (``frame, t, src_frame, src_t, stale, luma_mean, luma_std``:
``src_t`` is the presentation time of the source frame shown, ``stale`` marks output frames
with no source frame near them: the recording has a hole there); the schema metadata ``frames`` holds the letterbox
transform (of the upright frames), the rotation applied, the timing source (``pts`` or
``nominal``), the measured source rate and frame count and the video's path.
Pixels are not stored: :func:`iter_frames` regenerates the exact letterboxed frames from the source video on demand.

``manifest.json``: ``videos`` (video_id -> entry with ``status`` ok / quarantined and, when
quarantined, ``stage`` and ``reason``), ``ignored_files``, ``fps``, ``canvas``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.files import write_table
from pipeline.vision.geometry import Letterbox, letterbox_image
from pipeline.vision.video import VideoError, decode


@dataclass(frozen=True)
class Plan:
    """How one source video becomes fixed-fps letterboxed frames."""

    box: Letterbox
    src_fps: float
    src_frames: int  # frames actually decoded
    fps: float
    src_index: np.ndarray  # (n,) source frame index for each output frame
    rotation: int = 0  # clockwise degrees applied to every decoded frame
    timing: str = "pts"  # "pts": container presentation times; "nominal": frame count / rate
    stale: np.ndarray | None = None  # (n,) bool: no source frame near this output time

    @property
    def n(self) -> int:
        return len(self.src_index)


def write_plan(path: Path, plan: Plan, qc: dict[str, np.ndarray], rel: str) -> None:
    """The per-video Parquet (atomic), with the transform in its schema metadata."""
    import pyarrow as pa

    table = pa.table(
        {
            "frame": pa.array(np.arange(plan.n, dtype=np.int32)),
            "t": pa.array(np.arange(plan.n) / plan.fps),
            "src_frame": pa.array(plan.src_index.astype(np.int32)),
            "src_t": pa.array(np.asarray(qc["src_t"], np.float64)),
            "stale": pa.array(np.asarray(qc["stale"], bool)),
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
        "rotation": plan.rotation,
        "timing": plan.timing,
    }
    write_table(table.replace_schema_metadata({b"frames": json.dumps(meta, sort_keys=True).encode()}), path)


def read_plan(path: Path) -> Plan:
    """Load a plan written by :func:`write_plan`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["src_frame", "stale"])
    meta = json.loads(table.schema.metadata[b"frames"])
    return Plan(
        Letterbox(**meta["letterbox"]),
        meta["src_fps"],
        meta["src_frames"],
        meta["fps"],
        table.column("src_frame").to_numpy().astype(np.int64),
        meta["rotation"],
        meta["timing"],
        table.column("stale").to_numpy(zero_copy_only=False).astype(bool),
    )


def iter_frames(path: Path, plan: Plan, rgb: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Stream ``(output index, letterboxed frame)``; one source frame in memory at a time.

    The yielded array is reused between iterations: copy it if you keep it.
    """
    import cv2

    canvas = np.zeros((plan.box.canvas_h, plan.box.canvas_w, 3), np.uint8)
    k = 0
    for i, (_, frame) in enumerate(decode(path, plan.rotation)):
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
