"""`predict` throughput against its bare landmark loop, on one core.

Needs a trained model (`make run`). Usage:

    python bench/bench_predict.py [--model stats_gbm] [--subjects 2] [--seconds 12]

Generates (once) a few demo clips at 640x480 (n subjects x 4 classes), then times, interleaved,
best of 3, one process on one core (`--workers 1`):

* bare: decode every frame, letterbox it, FaceMesh on every frame and Hands on the model's
  schedule (`landmarks.hands_every`): what any landmark-based predictor must do;
* predict: the whole command path (frame plan, landmarks written to Parquet, features, windows,
  baseline, model, unfamiliar-input score, alerts, tables, figures, summary).

Prints frames per second of each, predict's real-time factor at the clips' rate, and the
ratio predict/bare (what predict adds on top of MediaPipe; 1.0 = nothing).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, demo_clips


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def bare(videos: list[Path], lm, canvas: int) -> int:
    import cv2

    from pipeline.vision import mediapipe as mpa
    from pipeline.vision.geometry import Letterbox, letterbox_image
    from pipeline.vision.video import open_video

    n = 0
    with mpa.quiet_native_stderr():
        for v in videos:
            fm = mpa.face_mesh(False, max_faces=lm.max_faces)
            hd = mpa.hands(lm.hands_complexity) if lm.hands else None
            with open_video(v) as (_, frames):
                box = None
                for i, (_, f) in enumerate(frames):
                    box = box or Letterbox.fit(f.shape[1], f.shape[0], canvas)
                    out = cv2.cvtColor(letterbox_image(f, box), cv2.COLOR_BGR2RGB)
                    fm.process(out)
                    if hd is not None and i % lm.hands_every == 0:
                        hd.process(out)
                    n += 1
            fm.close()
            if hd is not None:
                hd.close()
    return n


def main() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    from pipeline.apply import predict as P
    from pipeline.apply.model import load_model
    from pipeline.modeling import numerics

    numerics.pin(1)
    name = arg("--model", "stats_gbm")
    model = load_model(name, "alert", ROOT / "models", ROOT / "reports")
    work = Path(tempfile.gettempdir()) / "bench_predict"
    clips = demo_clips(work / "demo", int(arg("--subjects", "2")), float(arg("--seconds", "12")), (640, 480))
    lm, canvas = model.params.landmarks, model.params.frames.canvas
    rounds: dict[str, list[float]] = {"bare": [], "predict": []}
    frames = 0
    for _ in range(3):
        t0 = time.perf_counter()
        frames = bare(clips, lm, canvas)
        rounds["bare"].append(time.perf_counter() - t0)
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = P.run(work / "demo" / "videos", model, out, P.Options(workers=1))
        rounds["predict"].append(time.perf_counter() - t0)
    fps = model.params.frames.fps
    src_fps = 15.0  # the demo clips' rate
    bare_s, pred_s = min(rounds["bare"]), min(rounds["predict"])
    print(f"cpu: {_cpu()}; model {name}; {len(clips)} clips, {frames} source frames at 640x480, {res['scored']} scored")
    print(f"bare landmark loop: {frames / bare_s:.1f} frames/s")
    print(f"predict:            {frames / pred_s:.1f} frames/s = {frames / src_fps / pred_s:.1f}x real time")
    print(f"ratio predict/bare: {pred_s / bare_s:.2f} (model rate {fps:g} fps)")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
