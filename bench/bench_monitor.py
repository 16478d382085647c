"""Live monitor: throughput on one core against the stream's rate, alert latency on drivers the
model never saw, and memory over a long stream.

Needs the default demo run (`make run`: data/demo, data/windows, reports/). Usage:

    python bench/bench_monitor.py [--model stats_gbm] [--minutes 30] [--subjects 10]

1. throughput: the monitor (default landmarks settings, features, model, alert logic) on a 60-s
   demo stream, one core, as fast as it goes, against the stream's 15 fps (goal >= 2x real time)
   and against the bare landmarks loop on the same frames (what the monitor adds);
2. latency: for every held-out driver (the model of that driver's cross-validation fold is
   retrained here on the other folds' windows, thresholds from the model's evaluation) and every
   behaviour: 24 s of normal driving (20 s calibration) then 12 s of the behaviour; latency =
   first alert of that behaviour - its onset (goal <= 3 s); false alerts during normal driving;
3. memory: resident memory every 5 minutes of a `--minutes` stream (goal: flat).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def arg(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def clip_frames(path: Path) -> list[np.ndarray]:
    from pipeline.vision.video import open_video

    with open_video(path) as (_, frames):
        return [f.copy() for _, f in frames]


def stream(clips: list[list[np.ndarray]], fps: float, loops: int = 1):
    """(t, frame) of the clips back to back at ``fps``, ``loops`` times."""
    k = 0
    for _ in range(loops):
        for c in clips:
            for f in c:
                yield k / fps, f
                k += 1


def fold_model(name: str, fold: int, base):
    """``base`` (the trained model) refitted without the windows of ``fold``'s subjects."""
    import dataclasses

    from pipeline.contracts.windows import Normaliser, read_windows
    from pipeline.core.config import load_params
    from pipeline.modeling import registry
    from pipeline.modeling.base import softmax

    x, y, index, meta = read_windows(ROOT / "data" / "windows")
    train = index["fold"].to_numpy() != fold
    norm = Normaliser.fit(x[train])
    model = registry.create(name, x.shape[2], len(meta["classes"]), x.shape[1], base.card.hparams)
    empty = (x[:0], y[:0])
    model.fit((norm.apply(x[train]), y[train]), empty, len(meta["classes"]), load_params(ROOT / "params.yaml").train)
    subjects = sorted(set(index["subject"].astype(str)[~train]))
    return dataclasses.replace(base, _proba=lambda w: softmax(model.logits(norm.apply(w)))), subjects


def run_monitor(model, frames, o):
    from pipeline.apply.monitor import Monitor, ticks

    events = []
    mon = Monitor(model, o, events.append)
    t0 = time.perf_counter()
    n = 0
    for k, f in ticks(frames, mon.fps):
        mon.step(k, f)
        n += 1
    mon.close()
    return events, n, time.perf_counter() - t0


def bare(frames: list[np.ndarray], p) -> float:
    """Frames per second of the bare loop: letterbox + FaceMesh + Hands on its schedule, nothing else."""
    import cv2

    from pipeline.vision import mediapipe as mpa
    from pipeline.vision.geometry import Letterbox, letterbox_image

    box = Letterbox.fit(frames[0].shape[1], frames[0].shape[0], 320)
    canvas = np.zeros((box.canvas_h, box.canvas_w, 3), np.uint8)
    with mpa.quiet_native_stderr():
        fm = mpa.face_mesh(False, max_faces=p.max_faces)
        hd = mpa.hands(p.hands_complexity)
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            letterbox_image(f, box, out=canvas)
            rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
            fm.process(rgb)
            if i % p.hands_every == 0:
                hd.process(rgb)
        dt = time.perf_counter() - t0
        fm.close()
        hd.close()
    return len(frames) / dt


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    from pipeline.modeling import numerics

    numerics.pin(1)
    import cv2

    cv2.setNumThreads(1)
    from pipeline.apply.model import load_model
    from pipeline.apply.monitor import MonitorOptions

    name = arg("--model", "stats_gbm")
    minutes = float(arg("--minutes", "30"))
    n_subjects = int(arg("--subjects", "10"))
    base = load_model(name, "alert", ROOT / "models", ROOT / "reports")
    videos = ROOT / "data" / "demo" / "videos"
    o = MonitorOptions(mode="alert", calibration_s=20.0, clear_s=2.0, realtime=False)
    fps = base.params.frames.fps

    # 1. throughput on one core
    s01 = [clip_frames(videos / f"s01_{c}_1.mp4") for c in ("normal", "text", "normal", "phonecall", "yawn")]
    frames = [f for c in s01 for f in c]
    events, n, dt = run_monitor(base, stream(s01, fps), o)
    f_bare = bare(frames, base.params.landmarks)
    print(
        f"monitor throughput ({name}, {n} frames = {n / fps:.0f} s of stream, one core): {n / dt:.1f} fps = "
        f"{n / dt / fps:.2f}x real time at {fps:g} fps (goal >= 2) | bare landmarks loop {f_bare:.1f} fps, "
        f"monitor/bare {n / dt / f_bare:.2f}"
    )

    # 2. alert latency on held-out drivers
    from pipeline.contracts.windows import read_index

    index = read_index(ROOT / "data" / "windows")
    folds = sorted(set(index["fold"]))
    lat: dict[str, list[float]] = {}
    missed: list[str] = []
    false_alerts = 0
    normal_s = 0.0
    done = 0
    for fold in folds:
        model, subjects = fold_model(name, fold, base)
        for s in subjects:
            if done >= n_subjects:
                break
            done += 1
            normal = [clip_frames(videos / f"{s}_normal_{i}.mp4") for i in (1, 2)]
            onset = sum(len(c) for c in normal) / fps
            for behaviour in base.classes[1:]:
                clip = clip_frames(videos / f"{s}_{behaviour}_1.mp4")
                events, _, _ = run_monitor(model, stream([*normal, clip], fps), o)
                alerts = [e for e in events if e["event"] == "alert"]
                false_alerts += sum(e["t"] <= onset for e in alerts)
                hit = [e["t"] - onset for e in alerts if e["class"] == behaviour and e["t"] > onset]
                if hit:
                    lat.setdefault(behaviour, []).append(hit[0])
                else:
                    missed.append(f"{s}/{behaviour}")
                normal_s += onset - o.calibration_s
    every = [v for vs in lat.values() for v in vs]
    print(
        f"alert latency ({done} held-out drivers x {len(base.classes) - 1} behaviours, onset after 24 s of normal "
        f"driving incl. 20 s calibration; alert mode): {len(every)} alerted, {len(missed)} missed {missed}"
    )
    if every:
        q = np.percentile(every, [50, 90])
        print(
            f"  latency median {q[0]:.2f} s, p90 {q[1]:.2f} s, max {max(every):.2f} s; within 3 s: "
            f"{np.mean(np.array(every) <= 3.0):.0%} of alerts (goal <= 3 s)"
        )
        for b, vs in lat.items():
            print(f"  {b}: median {np.median(vs):.2f} s over {len(vs)} ({', '.join(f'{v:.1f}' for v in vs)})")
    print(f"  false alerts during {normal_s:.0f} s of decided normal driving: {false_alerts}")

    # 3. memory over a long stream
    loops = max(1, int(np.ceil(minutes * 60 / (len(frames) / fps))))
    from pipeline.apply.monitor import Monitor, ticks

    mon = Monitor(base, o, lambda e: None)
    marks = []
    t0 = time.perf_counter()
    for k, f in ticks(stream(s01, fps, loops), fps):
        if k / fps > minutes * 60:
            break
        mon.step(k, f)
        if k % int(300 * fps) == 0:
            marks.append((k / fps / 60, rss_mb()))
    mon.close()
    marks.append(((k + 1) / fps / 60, rss_mb()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first = next((m for t, m in marks if t >= 5), marks[0][1])
    print(
        f"memory over {minutes:g} min of stream ({time.perf_counter() - t0:.0f} s to process): "
        + ", ".join(f"{t:.0f} min {m:.0f} MB" for t, m in marks)
        + f" | last/5-min {marks[-1][1] / first:.3f} (goal ~1.0), peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
