"""Reading and writing video files with OpenCV (the build inside the mediapipe wheel).

:class:`VideoError` is the one way a video is refused: its message becomes the quarantine
reason, the run goes on with the other videos.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.files import atomic_path


class VideoError(Exception):
    """A video that cannot be used; the message is the quarantine reason."""


@dataclass(frozen=True)
class Probe:
    """What the container says about a video. ``width``/``height`` are UPRIGHT (as a player shows
    the frames, after ``rotation``); ``fps`` is the container's (average) rate."""

    width: int
    height: int
    fps: float
    count: int  # frames the header announces (0 when unknown)
    rotation: int  # clockwise degrees (0, 90, 180, 270) that turn a stored frame upright


_ROTATE = {90: 0, 180: 1, 270: 2}  # cv2.ROTATE_90_CLOCKWISE, ROTATE_180, ROTATE_90_COUNTERCLOCKWISE


def _open(path: Path):
    """A capture that returns frames as stored (rotation is ours to apply, on every OpenCV build)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    return cap


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[tuple[Probe, Iterator[tuple[float, np.ndarray]]]]:
    """Open ``path`` once: its :class:`Probe` (or :class:`VideoError`) and an iterator over its
    frames as a player shows them (see :func:`decode`)."""
    import cv2

    if not path.exists():
        raise VideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    cap = _open(path)
    try:
        if not cap.isOpened():
            raise VideoError("not a readable video: OpenCV could not open it (corrupt, truncated or not a video)")
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        meta = cap.get(cv2.CAP_PROP_ORIENTATION_META)
        if w <= 0 or h <= 0:
            raise VideoError("not a readable video: no frame size (no video stream?)")
        if not (0 < fps < 1000):
            raise VideoError(f"no usable frame rate in the file (reported {fps}); re-mux it with a fixed fps")
        rotation = round(meta) % 360 if np.isfinite(meta) else 0
        if rotation not in (0, 90, 180, 270):
            raise VideoError(
                f"rotation tag of {rotation} degrees: only multiples of 90 are supported; re-encode it upright"
            )
        if rotation in (90, 270):
            w, h = h, w
        yield Probe(w, h, fps, count, rotation), _frames(cap, rotation)
    finally:
        cap.release()


def probe(path: Path) -> Probe:
    """The container's facts about ``path``, or :class:`VideoError`."""
    with open_video(path) as (info, _):
        return info


def _frames(cap, rotation: int) -> Iterator[tuple[float, np.ndarray]]:
    import cv2

    turn = _ROTATE.get(rotation)
    while True:
        ok, frame = cap.read()
        if not ok:
            return
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        yield t, (frame if turn is None else cv2.rotate(frame, turn))


def decode(path: Path, rotation: int = 0) -> Iterator[tuple[float, np.ndarray]]:
    """Every frame of ``path`` as a player shows it (BGR, turned upright by ``rotation``), with its
    presentation time in seconds from the container."""
    cap = _open(path)
    try:
        yield from _frames(cap, rotation)
    finally:
        cap.release()


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """Write RGB frames as MPEG-4 part 2 (the codec this OpenCV build can encode), atomically."""
    import cv2

    h, w = frames[0].shape[:2]
    with atomic_path(path, keep_suffix=True) as tmp:
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not vw.isOpened():
            raise RuntimeError(f"OpenCV cannot open a mp4v writer for {path}")
        for f in frames:
            vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        vw.release()
