"""Time and peak memory of the stages after the features, as the data grows (issue: scale).

Synthetic per-frame features in the features contract (pipeline/contracts/features.py) for a
number of hours of video at 15 fps: 2-minute recordings, one subject every 6 of them (at least
8 subjects), each subject driving every class in turn, a slow random walk per feature plus a class-dependent shift,
a face lost for a few seconds now and then (features NaN, ``face_present`` 0) and gaps of dropped
frames. Then the real stage CLIs, each in its own process as `dvc repro` runs them: windows ->
validate -> train (a few epochs) -> evaluate per model. Printed per stage and size: wall time and
peak resident memory of the stage WITH its worker processes (sum over the process tree, sampled
every 0.1 s); then each stage's memory added per hour of video between the two largest sizes, and
where that line reaches 24 GB (flat memory: never).

    python bench/bench_scale.py                       # 1 and 10 hours, stats_gbm fcn gru
    python bench/bench_scale.py --hours 1 10 100      # the issue's sizes (100 h: hours of CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FPS = 15
VIDEO_S = 120
CLASSES = ("normal", "phonecall", "text", "yawn")


def write_features(path: Path, hours: float, seed: int = 0) -> int:
    """The synthetic features table, written one row group per recording; returns its frame count."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.contracts.features import REGISTRY, registry_json

    rng = np.random.default_rng(seed)
    n_videos = max(4 * 8, math.ceil(hours * 3600 / VIDEO_S))  # at least 8 subjects with every class
    n_subjects = max(8, round(n_videos / 6))
    names = list(REGISTRY)
    shift = rng.normal(scale=0.6, size=(len(CLASSES), len(names)))
    lo = np.array([REGISTRY[n].lo for n in names])
    hi = np.array([REGISTRY[n].hi for n in names])
    flag = np.array([REGISTRY[n].unit == "flag" for n in names])
    face_derived = np.array([REGISTRY[n].face_derived for n in names])
    frames, writer = 0, None
    cats = {
        "video": [f"v{i:05d}" for i in range(n_videos)],
        "subject": [f"s{i:04d}" for i in range(n_subjects)],
        "label": list(CLASSES),
    }
    try:
        for v in range(n_videos):
            n = VIDEO_S * FPS
            keep = np.ones(n, bool)  # dropped frames: a few gaps of 0.5-3 s
            for start in rng.integers(0, n, size=2):
                keep[start : start + rng.integers(FPS // 2, 3 * FPS)] = False
            frame = np.flatnonzero(keep).astype(np.int32)
            label = v % len(CLASSES)
            subject = (v // len(CLASSES)) % n_subjects  # four recordings in a row, one of each class
            walk = np.cumsum(rng.normal(scale=0.05, size=(len(frame), len(names))), axis=0)
            z = 1 / (1 + np.exp(-(walk + shift[label] + rng.normal(scale=0.3, size=walk.shape))))
            x = (lo + (hi - lo) * np.where(flag, z > 0.5, z)).astype(np.float32)  # inside each declared range
            face = np.ones(len(frame), np.float32)
            for start in rng.integers(0, len(frame), size=1):  # the face lost for 1-4 s
                face[start : start + rng.integers(FPS, 4 * FPS)] = 0
            x[np.ix_(face == 0, face_derived)] = np.nan
            df = pd.DataFrame(x, columns=names)
            df["face_present"] = face
            df["face_filled"] = np.zeros(len(frame), np.int8)
            df["stale"] = np.zeros(len(frame), bool)
            ids = {
                "video": pd.Categorical([cats["video"][v]] * len(frame), categories=cats["video"]),
                "subject": pd.Categorical([cats["subject"][subject]] * len(frame), categories=cats["subject"]),
                "label": pd.Categorical([CLASSES[label]] * len(frame), categories=cats["label"]),
                "frame": frame,
                "t": frame / FPS,
            }
            df = pd.concat([pd.DataFrame(ids), df], axis=1)
            table = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                schema = table.schema.with_metadata({**(table.schema.metadata or {}), b"features": registry_json()})
                writer = pq.ParquetWriter(path, schema)
            writer.write_table(table.cast(writer.schema))
            frames += len(frame)
    finally:
        if writer is not None:
            writer.close()
    return frames


def tree_rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of ``pid`` and all its descendants, and of the largest one of them (MB)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    sizes = [0]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(p.memory_info().rss)
    return sum(sizes) / 2**20, max(sizes) / 2**20


def run_stage(argv: list[str], cwd: Path) -> tuple[float, float, float]:
    """Run one stage CLI; (wall seconds, peak tree RSS, peak RSS of one process, in MB). A failed
    stage stops the bench."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pipeline.stages", *argv]
    proc = subprocess.Popen(cmd, cwd=cwd, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]

    def sample() -> None:
        while proc.poll() is None:
            tree, one = tree_rss_mb(proc.pid)
            peak[0], peak[1] = max(peak[0], tree), max(peak[1], one)
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode:
        sys.exit(f"stage {' '.join(argv[:3])} failed (exit {proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0, peak[0], peak[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--models", nargs="+", default=["stats_gbm", "fcn", "gru"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="work here and keep the files (default: a temp dir)")
    args = ap.parse_args()
    import yaml

    sys.path.insert(0, str(ROOT))
    from pipeline.modeling.fingerprint import cpu_name

    print(f"CPU: {cpu_name()}")
    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    rows: dict[float, dict[str, tuple[float, float, float]]] = {}
    for hours in args.hours:
        work = base / f"{hours:g}h"
        (work / "data").mkdir(parents=True, exist_ok=True)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"]["classes"] = list(CLASSES)
        params["windows"].update(cv_folds=args.folds)
        params["train"].update(models=args.models, epochs=args.epochs, patience=args.epochs, workers=1)
        params["evaluate"]["explain_windows"] = 8
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (work / "data" / "quarantine.json").write_text('{"quarantined": [], "ignored_files": [], "warnings": []}')
        t0 = time.perf_counter()
        frames = write_features(work / "data" / "features.parquet", hours)
        print(f"\n{hours:g} h: {frames:,} frames of synthetic features ({time.perf_counter() - t0:.0f} s to write)")
        p = ["--params", str(work / "params.yaml")]
        feats, win = str(work / "data" / "features.parquet"), str(work / "data" / "windows")
        models, reports = str(work / "models"), str(work / "reports" / "models")
        stages: list[tuple[str, list[str]]] = [
            ("windows", ["windows", *p, "--features", feats, "--out", win]),
            (
                "validate",
                ["validate", *p, "--features", feats, "--windows", win, "--out", str(work / "reports" / "validation")]
                + ["--quarantine", str(work / "data" / "quarantine.json")],
            ),
        ]
        for m in args.models:
            stages.append((f"train@{m}", ["train", "--model", m, *p, "--windows", win, "--models", models]))
            stages[-1][1].extend(["--reports", reports])
            stages.append((f"evaluate@{m}", ["evaluate", "--model", m, *p, "--windows", win, "--models", models]))
            stages[-1][1].extend(["--reports", reports])
        rows[hours] = {}
        for name, argv in stages:
            wall, peak, one = run_stage(argv, ROOT)
            rows[hours][name] = (wall, peak, one)
            print(f"  {name:<20} {wall:8.1f} s  peak {peak / 1024:6.2f} GB (largest process {one / 1024:.2f} GB)")
        on_disk = sum(f.stat().st_size for f in (work / "data" / "windows").rglob("*")) / 2**20
        print(f"  windows on disk: {on_disk:.0f} MB")
    sizes = sorted(rows)
    print(f"\n| stage | {' | '.join(f'{h:g} h: s / peak GB / largest process GB' for h in sizes)} |", end="")
    print(" time ratio | per added hour (memory) | 24 GB reached at |" if len(sizes) > 1 else "")
    print("|---" * (len(sizes) + 1 + 3 * (len(sizes) > 1)) + "|")
    for name in rows[sizes[0]]:
        cells = [
            f"{rows[h][name][0]:.0f} / {rows[h][name][1] / 1024:.2f} / {rows[h][name][2] / 1024:.2f}" for h in sizes
        ]
        growth = ""
        if len(sizes) > 1:  # between the two largest sizes: time ratio, memory growth extrapolated
            (h0, h1) = sizes[-2], sizes[-1]
            ratio = rows[h1][name][0] / max(rows[h0][name][0], 1e-9)
            slope = (rows[h1][name][1] - rows[h0][name][1]) / 1024 / (h1 - h0)
            reach = f"{h1 + (24 - rows[h1][name][1] / 1024) / slope:,.0f} h" if slope > 0 else "never (flat)"
            growth = f" {ratio:.1f}x for {h1 / h0:g}x the hours | {slope:+.4f} GB/h | {reach} |"
        print(f"| {name} | {' | '.join(cells)} |{growth}")
    worst = max((v[2], h, n) for h in sizes for n, v in rows[h].items())
    print(f"\nlargest single process: {worst[0] / 1024:.2f} GB ({worst[2]} at {worst[1]:g} h); goal <= 4 GB")


if __name__ == "__main__":
    main()
