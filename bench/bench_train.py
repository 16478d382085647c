"""Training speed: the stage's loop vs a bare PyTorch loop, and pinned numerics vs the library defaults.

1. One epoch of the train stage's loop (validation, logging, clipping, schedule) vs a bare loop
   (forward, loss, backward, step) on the same model and batches. Goal: <= 1.2x.
2. The cost of CPU-independent numerics against the library defaults, per model: CPU time of a training
   epoch, one thread each, in fresh processes, rounds interleaved so drift hits both. Goal: <= 1.3x.
   Pinned: the zoo as trained (pipeline/core/cpu.py, pipeline/modeling/numerics.py: numpy and OpenBLAS
   on AVX2 kernels, ATen AVX2 kernels; our own matrix products, recurrent kernels, dropout,
   convolution and attention block). Default: what plain torch code does on this CPU, i.e. the same
   architectures built from torch's own modules (nn.LSTM/nn.GRU on oneDNN, nn.Dropout, nn.Conv1d,
   nn.TransformerEncoderLayer; fcn and cnn_lstm channels first, as torch's convolutions take them)
   with every library picking its kernels for this CPU.

Same data shape as the default demo (480 train / 160 val windows of 90 x 12), models as params.yaml
configures them.

    python bench/bench_train.py [model ...]
    python bench/bench_train.py --cost-only [model ...]      # 2. only
    python bench/bench_train.py --as-avx2-cpu [model ...]    # 2. as on a CPU without AVX-512 (simulated)

``--as-avx2-cpu`` caps every library at AVX2 with its own variables (numpy, OpenBLAS, oneDNN, MKL,
ATen) on the default side and compiles numba for AVX2 on the pinned side: what an AVX2-only CPU
(AMD Zen 2/3, most laptops) would pick, on this CPU's cores. A simulation, not a measurement on such a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402, F401  (pins numpy and OpenBLAS before numpy loads: pipeline/core/cpu.py)
from pipeline.core.cpu import NUMBA_AVX2, NUMPY_AVX512, PROCESS_ENV  # noqa: E402

# What every library picks on a CPU without AVX-512 (AMD Zen 2/3, most laptops), set by the libraries'
# own variables: numpy's AVX2 loops, OpenBLAS's Haswell kernels (Zen's are the same), oneDNN's and
# MKL's AVX2 code, ATen's AVX2 kernels.
AVX2_ONLY = {
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512,
    "OPENBLAS_CORETYPE": "Haswell",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
if sys.argv[1:2] == ["--child"] and sys.argv[2].startswith("default"):  # the library defaults
    for _k in PROCESS_ENV:
        os.environ.pop(_k, None)
    if sys.argv[2].endswith("avx2"):
        os.environ.update(AVX2_ONLY)
elif sys.argv[1:3] == ["--child", "pinned-avx2"]:  # numba's target on such a CPU (before numba loads)
    os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"] = NUMBA_AVX2
import numpy as np  # noqa: E402

N_TRAIN, N_VAL, T, F, C = 480, 160, 90, 12, 4
EPOCHS = 3
ROUNDS = 3
MODELS = ("gru", "bilstm_attn", "transformer", "cnn_lstm", "fcn")  # the default neural models


def hparams(name: str) -> dict:
    """The model as the pipeline trains it: params.yaml's ``hparams.<name>`` (the builders' own defaults
    are larger; figures before 2026-12-03 used those)."""
    import yaml

    return dict(yaml.safe_load((ROOT / "params.yaml").read_text())["hparams"].get(name) or {})


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
        model = registry.create(name, F, C, T, hparams(name), seed=0).module
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
        model = registry.create(name, F, C, T, hparams(name), seed=0)
        t0 = time.perf_counter()
        model.fit(d["train"], d["val"], C, cfg)
        return (time.perf_counter() - t0) / EPOCHS

    times = [(bare(), stage()) for _ in range(3)]  # interleaved: drift hits both
    b, s = min(t[0] for t in times), min(t[1] for t in times)
    print(f"loop ({name}): bare {b:.2f} s/epoch | stage {s:.2f} s/epoch | ratio {s / b:.2f} (goal <= 1.2)")


def child(mode: str, models: list[str]) -> None:
    """In a fresh process: pin (or not), then the CPU time of one epoch of the stage's fit per model."""
    from pipeline.core.config import TrainParams
    from pipeline.modeling import numerics

    cfg = dataclasses.replace(TrainParams(), epochs=EPOCHS, patience=EPOCHS)
    if mode.startswith("pinned"):
        numerics.pin(cfg.threads)
    else:
        numerics.unpinned(cfg.threads)  # same thread count: the cost of the kernels, not of fewer cores
        library_zoo()
    from pipeline.modeling import registry

    d, out = data(), {}
    warm = {k: (x[:64], y[:64]) for k, (x, y) in d.items()}
    for name in models:
        # one short fit first: imports done on first use (sklearn by the metrics, torch._dynamo by the
        # optimiser: ~5 s of CPU) and first-call set-up are not training steps, on either side
        registry.create(name, F, C, T, hparams(name), seed=0).fit(
            warm["train"], warm["val"], C, dataclasses.replace(cfg, epochs=1)
        )
        model = registry.create(name, F, C, T, hparams(name), seed=0)
        t0 = time.process_time()
        model.fit(d["train"], d["val"], C, cfg)
        out[name] = (time.process_time() - t0) / EPOCHS
    print(json.dumps(out))


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def library_zoo() -> None:
    """Build the zoo from torch's own modules (the baseline of the numerics cost)."""
    import torch
    from torch import nn

    from pipeline.modeling import zoo

    class TorchRecurrent(nn.Module):
        def __init__(self, cell: str, n_in: int, hidden: int, bidirectional: bool = False) -> None:
            super().__init__()
            cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
            self.rnn = cls(n_in, hidden, batch_first=True, bidirectional=bidirectional)

        def forward(self, x: torch.Tensor):
            return self.rnn(x)

    class TorchEncoderBlock(nn.TransformerEncoderLayer):
        def __init__(self, d_model: int, heads: int, ff: int, dropout: float) -> None:
            super().__init__(d_model, heads, ff, dropout, batch_first=True, norm_first=True)

    def fcn_forward(self, x: torch.Tensor) -> torch.Tensor:  # torch's layout: channels first
        return self.head(self.drop(self.body(x.transpose(1, 2)).mean(2)))

    def cnn_lstm_forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hn, _) = self.rnn(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return self.head(self.drop(hn[-1]))

    zoo.Recurrent, zoo.Dropout, zoo.Conv1d, zoo.EncoderBlock = TorchRecurrent, nn.Dropout, nn.Conv1d, TorchEncoderBlock
    zoo.FCN.forward, zoo.CNNLSTM.forward = fcn_forward, cnn_lstm_forward


def numerics_cost(models: list[str], avx2: bool = False) -> None:
    def run(mode: str) -> dict[str, float]:
        cmd = [sys.executable, __file__, "--child", mode + ("-avx2" if avx2 else ""), *models]
        return json.loads(
            subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        )

    rounds = [(run("default"), run("pinned")) for _ in range(ROUNDS)]  # interleaved: drift hits both
    default = {m: min(r[0][m] for r in rounds) for m in models}
    pinned = {m: min(r[1][m] for r in rounds) for m in models}
    print(
        f"CPU: {cpu_model()} (CPU time per epoch, 1 thread, best of {ROUNDS} interleaved rounds, "
        "hparams from params.yaml)"
        + ("; SIMULATED AVX2-only CPU: every library capped at AVX2 by its own variables" if avx2 else "")
    )
    for m in models:
        print(
            f"numerics ({m}): default {default[m]:.2f} s/epoch | pinned {pinned[m]:.2f} s/epoch | "
            f"ratio {pinned[m] / default[m]:.2f} (goal <= 1.3)"
        )
    total = sum(pinned.values()) / sum(default.values())
    print(f"numerics, all {len(models)} models: ratio {total:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
    else:
        chosen = [a for a in sys.argv[1:] if not a.startswith("--")] or list(MODELS)
        if "--cost-only" not in sys.argv and "--as-avx2-cpu" not in sys.argv:
            loop_overhead(chosen[0])
        numerics_cost(chosen, avx2="--as-avx2-cpu" in sys.argv)
