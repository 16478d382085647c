"""One training epoch of the train stage vs a bare PyTorch loop over the same model and batches.

Goal: the stage's epoch (with its per-epoch validation, logging, clipping, schedule)
costs <= 1.2x the bare loop (forward, loss, backward, step). Same data shape as the
default demo (480 train / 160 val windows of 90 x 12).

    python bench/bench_train.py [model]
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

N_TRAIN, N_VAL, T, F, C = 480, 160, 90, 12, 4


def main() -> None:
    import torch
    from pipeline.models import create_model

    from pipeline.core.config import TrainParams
    from pipeline.stages import train as tr

    name = sys.argv[1] if len(sys.argv) > 1 else "gru"
    rng = np.random.default_rng(0)
    data = {
        "train": (rng.normal(size=(N_TRAIN, T, F)).astype(np.float32), rng.integers(0, C, N_TRAIN)),
        "val": (rng.normal(size=(N_VAL, T, F)).astype(np.float32), rng.integers(0, C, N_VAL)),
    }
    epochs = 3
    cfg = dataclasses.replace(TrainParams(), epochs=epochs, patience=epochs)

    def bare() -> float:
        torch.manual_seed(0)
        model = create_model(name, F, C, T)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        x, y = torch.tensor(data["train"][0]), torch.tensor(data["train"][1])
        t0 = time.perf_counter()
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x))
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
        return (time.perf_counter() - t0) / epochs

    def stage() -> float:
        t0 = time.perf_counter()
        tr.fit_torch(name, {}, data, C, cfg)
        return (time.perf_counter() - t0) / epochs

    b = min(bare() for _ in range(2))
    s = min(stage() for _ in range(2))
    print(f"train epoch ({name}, {N_TRAIN} windows of {T}x{F}): bare {b:.2f} s | stage {s:.2f} s | ratio {s / b:.2f} "
          "(goal <= 1.2)")


if __name__ == "__main__":
    main()
