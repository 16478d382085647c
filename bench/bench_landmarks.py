"""landmarks stage vs a bare loop of the same MediaPipe models over the same frames.

The default settings (FaceMesh for up to 3 faces, Hands every ``hands_every`` frames) vs the
same stage with Hands on every frame (goal: >= 2x); per process vs a bare loop running the
same models on the same schedule (goal: stage >= 0.9x bare), 2 workers vs 1 (goal: >= 1.6x),
and peak memory for a short vs an 8x longer video (goal: no growth with length).

    python bench/bench_landmarks.py [--no-hands] [--max-faces N]

Worker scaling is measured on the clips three times over (48 videos), so the ~3 s it takes to
spawn the workers and build their graphs does not dominate a 10-second measurement.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _common import bare_letterboxed, best_of, demo_clips, peak_rss_mb

CANVAS = 320


def bare(videos: list[Path], hands: bool, max_faces: int, hands_every: int) -> int:
    """Decode, letterbox, FaceMesh (refine) per frame and Hands every ``hands_every``; fresh models per video."""
    import cv2
    import mediapipe as mp

    n = 0
    for v in videos:
        fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True)
        hd = mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2, model_complexity=0) if hands else None
        for i, frame in enumerate(bare_letterboxed(v, CANVAS)):
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            fm.process(rgb)
            if hd is not None and i % hands_every == 0:
                hd.process(rgb)
            n += 1
        fm.close()
        if hd is not None:
            hd.close()
    return n


def jobs(videos: list[Path], plans: Path, out: Path, settings) -> list:
    from pipeline.stages.landmarks import Job

    return [Job(v.stem, v.name, v, plans / f"{v.stem}.parquet", out, settings) for v in videos]


def plan(video: Path, plans: Path) -> None:
    from pipeline.core.config import FramesParams
    from pipeline.stages.frames import Job, process_video

    res = process_video(Job(video.stem, video.name, video, plans, FramesParams(fps=15.0, canvas=CANVAS), 1))
    assert res["status"] == "ok", res


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

    from pipeline.core.config import LandmarksParams

    hands = "--no-hands" not in sys.argv
    faces = LandmarksParams().max_faces
    if "--max-faces" in sys.argv:
        faces = int(sys.argv[sys.argv.index("--max-faces") + 1])
    default = LandmarksParams(hands=hands, max_faces=faces)
    every_frame = LandmarksParams(hands=hands, hands_every=1, max_faces=faces)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        videos = demo_clips(d / "raw", n_subjects=4, seconds=8.0)
        for v in videos:
            plan(v, d / "plans")
        js = jobs(videos, d / "plans", d / "out", default)
        f_bare = best_of(lambda: bare(videos, hands, default.max_faces, default.hands_every), repeats=2)
        f_one = best_of(lambda: stage(js, 1), repeats=2)
        f_all = best_of(lambda: stage(jobs(videos, d / "plans", d / "out", every_frame), 1), repeats=2)
        times = {}
        for workers in (1, 2):
            t = time.perf_counter()
            n = stage(js * 3, workers)  # includes starting the spawned workers
            times[workers] = time.perf_counter() - t
        frames_once = n // 3
        tag = f"FaceMesh (up to {default.max_faces} faces)" + (f" + Hands every {default.hands_every}" if hands else "")
        print(
            f"landmarks ({tag}, {len(videos)} videos, {frames_once} frames): bare {f_bare:.1f} fps | stage 1 worker "
            f"{f_one:.1f} fps | ratio {f_one / f_bare:.2f} (goal >= 0.9)"
        )
        if hands:
            print(
                f"landmarks default {f_one:.1f} fps vs Hands on every frame {f_all:.1f} fps | "
                f"speed-up {f_one / f_all:.2f} (goal >= 2)"
            )
        print(
            f"landmarks {n} frames: 1 worker {n / times[1]:.1f} fps | 2 workers {n / times[2]:.1f} fps (start-up "
            f"included) | speed-up {times[1] / times[2]:.2f} (goal >= 1.6)"
        )
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
            plan(d / f"{name}.mp4", d / "plans")
            mem[name] = peak_rss_mb(
                "from pathlib import Path; from pipeline.stages.landmarks import Job, process_video; "
                "from pipeline.core.config import LandmarksParams; "
                f"r = process_video(Job('{name}', '{name}', Path('{d}/{name}.mp4'), Path('{d}/plans/{name}.parquet'), "
                f"Path('{d}/o'), LandmarksParams(hands={hands}))); assert r['status'] == 'ok', r"
            )
        print(
            f"peak memory: {len(frames)} frames {mem['short']:.0f} MB | {8 * len(frames)} frames "
            f"{mem['long']:.0f} MB | ratio {mem['long'] / mem['short']:.2f} (goal ~1.0)"
        )


if __name__ == "__main__":
    main()
