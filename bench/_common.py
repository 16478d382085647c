"""Shared bench helpers: demo clips to measure on, best-of timing, peak memory in a child."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_clips(out: Path, n_subjects: int = 2, seconds: float = 6.0, size: tuple[int, int] = (320, 240)) -> list[Path]:
    """Generate (once) a few demo clips: n_subjects x 4 classes."""
    from pipeline.core.config import DemoParams
    from pipeline.stages.demo import generate

    if not (out / "labels.csv").exists():
        generate(
            DemoParams(subjects=n_subjects, clips_per_class=1, seconds=seconds, width=size[0], height=size[1]),
            out,
            workers=2,
        )
    return sorted((out / "videos").glob("*.mp4"))


def bare_letterboxed(video: Path, canvas: int):
    """The bare baseline: decode every frame and letterbox it onto a square canvas (BGR)."""
    import cv2
    import numpy as np

    cap = cv2.VideoCapture(str(video))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    s = min(canvas / w, canvas / h)
    nw, nh = round(w * s), round(h * s)
    x0, y0 = (canvas - nw) // 2, (canvas - nh) // 2
    out = np.zeros((canvas, canvas, 3), np.uint8)
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out[y0 : y0 + nh, x0 : x0 + nw] = f if (nw, nh) == (w, h) else cv2.resize(f, (nw, nh))
        yield out
    cap.release()


def best_of(fn: Callable[[], int], repeats: int = 3) -> float:
    """Frames per second of ``fn`` (which returns how many frames it handled), best of N."""
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def peak_rss_mb(code: str) -> float:
    """Run ``code`` in a fresh interpreter and return its peak resident memory (MB)."""
    script = code + "\nimport resource, json; print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1]) / 1024
