"""The MediaPipe adapter: FaceMesh and Hands graphs, fast landmark reading, quiet start-up.

MediaPipe 0.10.21 writes its start-up lines (``inference_feedback_manager.cc``, XNNPACK
delegate, "All log messages before absl::InitializeLog()") straight to file descriptor 2
before absl logging is initialised: ``GLOG_minloglevel`` / ``TF_CPP_MIN_LOG_LEVEL`` do not
reach them. :func:`quiet_native_stderr` captures fd 2 around graph creation and use, drops
the known chatter and passes every other line through, so real native errors still show.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

import numpy as np

# Lines MediaPipe/TFLite/absl print on every graph start; nothing a user can act on.
CHATTER = re.compile(
    r"inference_feedback_manager\.cc"
    r"|XNNPACK"
    r"|All log messages before absl::InitializeLog\(\)"
    r"|TensorFlow Lite"
    r"|gl_context"
    r"|^[IW]\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\]"  # absl INFO / WARNING lines (errors pass through)
)


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Capture fd 2 (native and Python writes alike) and re-emit all but :data:`CHATTER` lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            keep = [ln for ln in buf.read().decode(errors="replace").splitlines() if ln and not CHATTER.search(ln)]
            if keep:
                sys.stderr.write("\n".join(keep) + "\n")
                sys.stderr.flush()


def face_mesh(static: bool, min_detection: float = 0.5, min_tracking: float = 0.5, max_faces: int = 1):
    """FaceMesh with 478 points (iris refined), up to ``max_faces`` faces."""
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static,
        max_num_faces=max_faces,
        refine_landmarks=True,
        min_detection_confidence=min_detection,
        min_tracking_confidence=min_tracking,
    )


def hands(complexity: int, min_detection: float = 0.5, min_tracking: float = 0.5):
    """Hands in tracking mode, up to two."""
    import mediapipe as mp

    return mp.solutions.hands.Hands(
        static_image_mode=False,
        max_num_hands=2,
        model_complexity=complexity,
        min_detection_confidence=min_detection,
        min_tracking_confidence=min_tracking,
    )


_LM_BYTES = 17  # one landmark on the wire: 0x0A, len 15, then x, y, z as tagged fixed32 floats


def landmark_array(msg, n: int) -> np.ndarray:
    """(n, 3) float32 x, y, z of a MediaPipe landmark list, read from its wire bytes.

    About 20x faster than looping over ``msg.landmark`` in Python. The fixed layout is
    checked byte by byte; anything else (e.g. visibility set) takes the slow, general path.
    """
    raw = msg.SerializeToString()
    if len(raw) == n * _LM_BYTES:
        a = np.frombuffer(raw, np.uint8).reshape(n, _LM_BYTES)
        tags_ok = (a[:, 0] == 0x0A) & (a[:, 1] == 15) & (a[:, 2] == 0x0D) & (a[:, 7] == 0x15) & (a[:, 12] == 0x1D)
        if tags_ok.all():
            return np.ascontiguousarray(a[:, [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]]).view("<f4").reshape(n, 3)
    return np.array([(p.x, p.y, p.z) for p in msg.landmark], np.float32)
