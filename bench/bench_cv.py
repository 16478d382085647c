"""Cross-validation speed: folds side by side on all cores vs one after another.

Trains the subject-grouped folds of one model (pipeline/modeling/crossval.py) on a windows
set shaped like the default demo (10 subjects, 800 windows of 90 x 12, 4 classes, 5 folds)
twice, each time in a fresh process with pinned numerics and ``train.threads`` = 1:
``train.workers`` = 1 (the baseline: the same folds in one process, one after another)
and ``train.workers`` = 0 (all cores). Prints the speed-up of the fold loop and of the whole
train stage (folds + the final model on all subjects, which runs alone). Goal on 2 cores:
folds >= 1.7x. Both runs write the same bytes (tests/test_numerics.py).

    python bench/bench_cv.py [model] [epochs] [folds]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SUBJECTS, PER_SUBJECT, T, F, C = 10, 80, 90, 12, 4


def write_set(root: Path, k: int) -> Path:
    """Demo-shaped windows with a learnable, subject-shifted signal (so early stopping behaves as on data)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = SUBJECTS * PER_SUBJECT
    subj = np.repeat(np.arange(SUBJECTS), PER_SUBJECT)
    y = np.arange(n) % C
    x = rng.normal(0, 1, (n, T, F)).astype(np.float32)
    x[np.arange(n), :, y] += 0.6 * np.sin(np.linspace(0, 6, T))[None, :]
    x += rng.normal(0, 0.5, (SUBJECTS, 1, F)).astype(np.float32)[subj]
    classes = [f"c{i}" for i in range(C)]
    root.mkdir(parents=True, exist_ok=True)
    table = {
        "window_id": [f"w{i}" for i in range(n)],
        "video": [f"v{s}" for s in subj],
        "subject": [f"s{s}" for s in subj],
        "label": [classes[k] for k in y],
        "fold": (subj % k).astype(np.int16),
        "start_frame": np.zeros(n, np.int32),
        "end_frame": np.full(n, T - 1, np.int32),
        "start_t": np.zeros(n),
        "end_t": np.full(n, 6.0),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), T * F),
    }
    pq.write_table(pa.table(table), root / "windows.parquet")
    meta = {"format": "driver-windows/2", "features": [f"f{i}" for i in range(F)], "classes": classes}
    meta |= {"window": T, "folds": k, "normalisation": {"subject_baseline": False}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def child(windows: str, model: str, epochs: int, workers: int) -> None:
    """In a fresh process: pin, then time the fold loop and the final model."""
    import dataclasses

    from pipeline.core.config import TrainParams
    from pipeline.modeling import numerics

    cfg = dataclasses.replace(TrainParams(), epochs=epochs, patience=epochs, threads=1)
    numerics.pin(cfg.threads)
    from pipeline.modeling import crossval

    t0 = time.perf_counter()
    _, results = crossval.run_folds(model, {}, Path(windows), cfg, workers)
    folds = time.perf_counter() - t0
    crossval.fit_final(model, {}, Path(windows), cfg, results)
    print(json.dumps({"folds": folds, "total": time.perf_counter() - t0}))


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "gru"
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with tempfile.TemporaryDirectory() as d:
        windows = write_set(Path(d) / "w", k)

        def run(workers: int) -> dict[str, float]:
            cmd = [sys.executable, __file__, "--child", str(windows), model, str(epochs), str(workers)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            return json.loads(out.strip().splitlines()[-1])

        import os

        rounds = [(run(1), run(os.cpu_count() or 1)) for _ in range(2)]  # interleaved: drift hits both
    seq = {k: min(r[0][k] for r in rounds) for k in ("folds", "total")}
    par = {k: min(r[1][k] for r in rounds) for k in ("folds", "total")}
    print(
        f"cv ({model}, {k} folds x {epochs} epochs): folds one after another {seq['folds']:.1f} s | "
        f"side by side {par['folds']:.1f} s | ratio {seq['folds'] / par['folds']:.2f} (goal >= 1.7 on 2 cores)"
    )
    print(
        f"cv ({model}) whole train stage incl. the final model: {seq['total']:.1f} s -> {par['total']:.1f} s "
        f"| ratio {seq['total'] / par['total']:.2f}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
