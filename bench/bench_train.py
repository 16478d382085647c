"""Training speed: the stage's loop vs a bare PyTorch loop, and pinned numerics vs the library defaults.

1. One epoch of the train stage's loop (validation, logging, clipping, schedule) vs a bare loop
   (forward, loss, backward, step) on the same model and batches. Goal: <= 1.2x.
2. The cost of CPU-independent numerics (pipeline/modeling/numerics.py: MKL's COMPATIBLE branch,
   ATen AVX2 kernels, oneDNN capped at AVX, train.threads threads) against the unpinned default (whatever the
   CPU offers, all cores), each in a fresh process, same models and data. Goal: <= 1.3x.

Same data shape as the default demo (480 train / 160 val windows of 90 x 12).

    python bench/bench_train.py [model ...]
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
N_TRAIN, N_VAL, T, F, C = 480, 160, 90, 12, 4
EPOCHS = 3
ROUNDS = 2
MODELS = ("gru", "lstm", "bilstm_attn", "transformer", "cnn_lstm")


def data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "train": (rng.normal(size=(N_TRAIN, T, F)).astype(np.float32), rng.integers(0, C, N_TRAIN)),
        "val": (rng.normal(size=(N_VAL, T, F)).astype(np.float32), rng.integers(0, C, N_VAL)),
    }


def loop_overhead(name: str) -> None:
    import torch

    from pipeline.core.config import TrainParams
    from pipeline.modeling import registry

    d = data()
    cfg = dataclasses.replace(TrainParams(), epochs=EPOCHS, patience=EPOCHS)

    def bare() -> float:
        model = registry.create(name, F, C, T, {}, seed=0).module
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = torch.tensor(d["train"][0]), torch.tensor(d["train"][1])
        t0 = time.perf_counter()
        for _ in range(EPOCHS):
            model.train()
            order = torch.randperm(len(x))
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
        return (time.perf_counter() - t0) / EPOCHS

    def stage() -> float:
        model = registry.create(name, F, C, T, {}, seed=0)
        t0 = time.perf_counter()
        model.fit(d["train"], d["val"], C, cfg)
        return (time.perf_counter() - t0) / EPOCHS

    times = [(bare(), stage()) for _ in range(3)]  # interleaved: drift hits both
    b, s = min(t[0] for t in times), min(t[1] for t in times)
    print(f"loop ({name}): bare {b:.2f} s/epoch | stage {s:.2f} s/epoch | ratio {s / b:.2f} (goal <= 1.2)")


def child(mode: str, models: list[str]) -> None:
    """In a fresh process: pin (or not), then time the stage's fit per model (best of 2)."""
    from pipeline.core.config import TrainParams
    from pipeline.modeling import numerics

    cfg = dataclasses.replace(TrainParams(), epochs=EPOCHS, patience=EPOCHS)
    if mode == "pinned":
        numerics.pin(cfg.threads)
    from pipeline.modeling import registry

    d, out = data(), {}
    for name in models:
        times = []
        for _ in range(2):
            model = registry.create(name, F, C, T, {}, seed=0)
            t0 = time.perf_counter()
            model.fit(d["train"], d["val"], C, cfg)
            times.append((time.perf_counter() - t0) / EPOCHS)
        out[name] = min(times)
    print(json.dumps(out))


def numerics_cost(models: list[str]) -> None:
    def run(mode: str) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--child", mode, *models]
        return json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )

    rounds = [(run("default"), run("pinned")) for _ in range(ROUNDS)]  # interleaved: drift hits both
    default = {m: min(r[0][m] for r in rounds) for m in models}
    pinned = {m: min(r[1][m] for r in rounds) for m in models}
    for m in models:
        print(
            f"numerics ({m}): default {default[m]:.2f} s/epoch | pinned {pinned[m]:.2f} s/epoch | "
            f"ratio {pinned[m] / default[m]:.2f}"
        )
    total = sum(pinned.values()) / sum(default.values())
    print(f"numerics, all {len(models)} models: ratio {total:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        chosen = sys.argv[1:] or list(MODELS)
        loop_overhead(chosen[0])
        numerics_cost(chosen)
