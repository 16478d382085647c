"""Our matrix product (pipeline/modeling/kernels.matmul) vs OpenBLAS's pinned AVX2 kernels (numpy's
matmul under ``import pipeline``), on the products the zoo runs: fcn's and cnn_lstm's convolutions
(forward, input gradient, kernel gradient) for a training batch, and a transformer's linear layer.
CPU time, one thread, rounds interleaved; prints GMAC/s of each and the ratio (ours / OpenBLAS time:
below 1 is faster), and checks both give the same values up to rounding.

    python bench/bench_matmul.py                 # numba compiled for this CPU (AVX-512 where it has it)
    python bench/bench_matmul.py --as-avx2-cpu   # compiled for AVX2 (what AMD Zen 2/3, laptops run)
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import pipeline  # noqa: E402, F401  (pins numpy/OpenBLAS and numba's target: pipeline/core/cpu.py)
from pipeline.core.cpu import NUMBA_AVX2  # noqa: E402

if "--as-avx2-cpu" in sys.argv:  # before numba loads
    os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"] = NUMBA_AVX2
import numpy as np  # noqa: E402

N = 32 * 90  # a training batch of 90-step windows
SHAPES = {  # name: (M, K, N, left operand transposed)
    "fcn conv2 forward": (N, 5 * 64, 128, False),
    "fcn conv2 input grad": (N, 128, 5 * 64, False),
    "fcn conv2 kernel grad": (5 * 64, N, 128, True),
    "fcn conv3 forward": (N, 3 * 128, 64, False),
    "cnn_lstm conv forward": (N, 5 * 12, 32, False),
    "linear 32 -> 64": (N, 32, 64, False),
}
ROUNDS, REPEAT = 5, 20


def cpu_time(f, repeat: int) -> float:
    t = time.process_time()
    for _ in range(repeat):
        f()
    return (time.process_time() - t) / repeat


def main() -> None:
    import numba

    from pipeline.modeling import kernels

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    print(f"CPU: {cpu}; numba target {numba.config.CPU_NAME}; 1 thread, CPU time, best of {ROUNDS}")
    rng = np.random.default_rng(0)
    for name, (m, k, n, transposed) in SHAPES.items():
        a = rng.normal(size=(k, m)).astype(np.float32).T if transposed else rng.normal(size=(m, k)).astype(np.float32)
        b, out = rng.normal(size=(k, n)).astype(np.float32), np.empty((m, n), np.float32)
        kernels.matmul(a, b, out)  # compile
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-3, atol=1e-3 * np.sqrt(k))
        ours, blas = [], []
        for _ in range(ROUNDS):
            ours.append(cpu_time(lambda a=a, b=b, out=out: kernels.matmul(a, b, out), REPEAT))
            blas.append(cpu_time(lambda a=a, b=b: np.matmul(a, b), REPEAT))
        gmac = m * k * n / 1e9
        print(
            f"{name:24s} {m}x{k}x{n}: ours {gmac / min(ours):5.1f} GMAC/s | OpenBLAS (AVX2) "
            f"{gmac / min(blas):5.1f} GMAC/s | time ratio {min(ours) / min(blas):.2f}"
        )


if __name__ == "__main__":
    main()
