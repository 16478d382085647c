"""landmarks stage vs a bare loop of the same MediaPipe models over the same frames.

Per process (goal: stage >= 0.9x bare), 2 workers vs 1 (goal: >= 1.6x), and peak
memory for a short vs an 8x longer video (goal: no growth with length).

    python bench/bench_landmarks.py [--no-hands]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _common import bare_letterboxed, best_of, demo_clips, peak_rss_mb

CANVAS = 320


def bare(videos: list[Path], hands: bool) -> int:
    """Decode, letterbox, FaceMesh (refine) and Hands per frame; fresh models per video."""
    import cv2
    import mediapipe as mp

    n = 0
    for v in videos:
        fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True)
        hd = mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2, model_complexity=0) if hands else None
        for frame in bare_letterboxed(v, CANVAS):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            fm.process(rgb)
            if hd is not None:
                hd.process(rgb)
            n += 1
        fm.close()
        if hd is not None:
            hd.close()
    return n


def jobs(videos: list[Path], plans: Path, out: Path, hands: bool) -> list[tuple]:
    from pipeline.core.config import LandmarksParams

    return [(v.stem, v.name, v, plans / f"{v.stem}.parquet", out, LandmarksParams(hands=hands), 0.0) for v in videos]


def stage(job_list: list[tuple], workers: int) -> int:
    from pipeline.core.parallel import map_jobs
    from pipeline.stages.landmarks import process_video

    n = 0
    for res in map_jobs(process_video, job_list, workers, "bench"):
        assert res["status"] == "ok", res
        n += res["frames"]
    return n


def main() -> None:
    import cv2

    from pipeline.stages.frames import process_video as plan_one

    hands = "--no-hands" not in sys.argv
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        videos = demo_clips(d / "raw", n_subjects=4, seconds=8.0)
        for v in videos:
            plan_one((v.stem, v.name, v, d / "plans", 15.0, CANVAS, 1))
        js = jobs(videos, d / "plans", d / "out", hands)
        f_bare = best_of(lambda: bare(videos, hands), repeats=2)
        f_one = best_of(lambda: stage(js, 1), repeats=2)
        t = time.perf_counter()
        n = stage(js, 2)  # includes starting the 2 spawned workers
        f_two = n / (time.perf_counter() - t)
        tag = "FaceMesh+Hands" if hands else "FaceMesh only"
        print(
            f"landmarks ({tag}, {len(videos)} videos, {n} frames): bare {f_bare:.1f} fps | stage 1 worker "
            f"{f_one:.1f} fps | ratio {f_one / f_bare:.2f} (goal >= 0.9)"
        )
        print(f"landmarks 2 workers {f_two:.1f} fps | speed-up vs 1 worker {f_two / f_one:.2f} (goal >= 1.6)")
        # memory: one clip vs the same clip 8x longer
        from pipeline.stages.demo import write_mp4

        frames = []
        cap = cv2.VideoCapture(str(videos[0]))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f[..., ::-1])
        mem = {}
        for name, k in (("short", 1), ("long", 8)):
            write_mp4(frames * k, d / f"{name}.mp4", 15)
            plan_one((name, name, d / f"{name}.mp4", d / "plans", 15.0, CANVAS, 1))
            mem[name] = peak_rss_mb(
                "from pathlib import Path; from pipeline.stages.landmarks import process_video; "
                "from pipeline.core.config import LandmarksParams; "
                f"r = process_video(('{name}', '{name}', Path('{d}/{name}.mp4'), Path('{d}/plans/{name}.parquet'), "
                f"Path('{d}/o'), LandmarksParams(hands={hands}), 0.0)); assert r['status'] == 'ok', r"
            )
        print(
            f"peak memory: {len(frames)} frames {mem['short']:.0f} MB | {8 * len(frames)} frames "
            f"{mem['long']:.0f} MB | ratio {mem['long'] / mem['short']:.2f} (goal ~1.0)"
        )


if __name__ == "__main__":
    main()
