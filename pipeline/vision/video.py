"""Reading and writing video files with OpenCV (the build inside the mediapipe wheel).

:class:`VideoError` is the one way a video is refused: its message becomes the quarantine
reason, the run goes on with the other videos.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.core.files import atomic_path


class VideoError(Exception):
    """A video that cannot be used; the message is the quarantine reason."""


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


def decode(path: Path) -> Iterator[np.ndarray]:
    """Every frame of ``path`` as stored (BGR), one at a time."""
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
