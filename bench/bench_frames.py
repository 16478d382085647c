"""frames stage vs a bare OpenCV decode + letterbox loop over the same videos, same process.

Prints throughput ratios (goal: stage >= 0.8x bare) and peak memory for a short vs a
4x longer video (goal: no growth with length).

    python bench/bench_frames.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import bare_letterboxed, best_of, demo_clips, peak_rss_mb

CANVAS = 320


def bare(videos: list[Path]) -> int:
    """Decode every frame and letterbox it onto a square canvas: nothing else."""
    return sum(1 for v in videos for _ in bare_letterboxed(v, CANVAS))


def stage(videos: list[Path], out: Path) -> int:
    """The frames stage's own per-video work (workers=1), Parquet write included."""
    from pipeline.core.config import FramesParams
    from pipeline.stages.frames import Job, process_video

    n = 0
    for v in videos:
        res = process_video(Job(v.stem, v.name, v, out, FramesParams(fps=15.0, canvas=CANVAS), 1))
        assert res["status"] == "ok", res
        n += res["frames"]
    return n


def main() -> None:
    import cv2

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for size in ((320, 240), (640, 480)):
            videos = demo_clips(d / f"raw{size[0]}", size=size)
            f_bare = best_of(lambda v=videos: bare(v))
            f_stage = best_of(lambda v=videos: stage(v, d / "out"))
            print(
                f"frames {size[0]}x{size[1]} -> {CANVAS} canvas: bare {f_bare:7.0f} fps | stage {f_stage:7.0f} fps"
                f" | ratio {f_stage / f_bare:.2f} (goal >= 0.8)"
            )
        # memory: the same clip once vs 4x longer
        import numpy as np

        from pipeline.stages.demo import write_mp4

        clip = d / "raw320" / "videos"
        frames = []
        cap = cv2.VideoCapture(str(sorted(clip.glob("*.mp4"))[0]))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
        write_mp4(frames, d / "short.mp4", 15)
        write_mp4(frames * 8, d / "long.mp4", 15)
        mem = {}
        for name in ("short", "long"):
            mem[name] = peak_rss_mb(
                "from pathlib import Path; from pipeline.stages.frames import Job, process_video; "
                "from pipeline.core.config import FramesParams; "
                f"r = process_video(Job('x', 'x', Path('{d}/{name}.mp4'), Path('{d}/o'), "
                f"FramesParams(fps=15.0, canvas={CANVAS}), 1)); "
                "assert r['status'] == 'ok'"
            )
        print(
            f"peak memory: {len(frames)} frames {mem['short']:.0f} MB | {len(frames) * 8} frames {mem['long']:.0f} MB"
            f" | ratio {mem['long'] / mem['short']:.2f} (goal ~1.0)"
        )
        del np


if __name__ == "__main__":
    main()
