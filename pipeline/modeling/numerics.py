"""CPU-independent numerics for training and evaluation: same data + params -> same model bytes.

Measured here (AMD EPYC with AVX-512; tests/test_numerics.py): without pinning, each of
``MKL_CBWR=COMPATIBLE``, ``ATEN_CPU_CAPABILITY=avx2|default``, ``ONEDNN_MAX_CPU_ISA=AVX2``
and the thread count changes the trained bytes of recurrent, attention and convolutional
models, i.e. results depend on the CPU that trains them. :func:`pin` fixes every source:

* MKL (matrix products): ``MKL_CBWR=COMPATIBLE,STRICT``, the only reproducible code branch
  MKL offers on both Intel and AMD processors (AVX2/AVX-512 branches are Intel-only);
* ATen's own vectorised kernels: ``ATEN_CPU_CAPABILITY=avx2`` (every AVX2-only and AVX-512
  x86-64 CPU runs the same AVX2 kernels; a CPU without AVX2 is warned about);
* oneDNN (LSTM and convolutions): ``ONEDNN_MAX_CPU_ISA=AVX``. Capped at AVX2 it would pick
  its brgemm RNN kernels, whose K-blocking (the order of the sums) follows the CPU's L2
  cache size; at AVX it runs its gemm-based RNN and plain JIT convolutions, whose blockings
  are constants (oneDNN 3.x source: the cache-size heuristics left on these paths only
  split threads for the Threadpool runtime, not PyTorch's OpenMP build, or block copies).
  Turning oneDNN off instead costs 2.2x in training time (bench/bench_train.py);
* threads: a fixed count (params ``train.threads``), since reductions split by thread.

The environment variables are read when torch loads MKL and dispatches its first kernel, so
:func:`pin` must run before ``import torch``; stages call it first thing.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
PINNED_ENV = {
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX",
    "NUMBA_CPU_NAME": "generic",  # numba (MiniRocket) compiles fastmath code for the host CPU otherwise
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin(threads: int) -> None:
    """Pin CPU numerics for this process (call before torch is imported)."""
    if "torch" in sys.modules:
        raise RuntimeError("numerics.pin() must run before torch is imported (MKL reads MKL_CBWR at load)")
    os.environ.update(PINNED_ENV)
    for k in THREAD_ENV:
        os.environ[k] = str(threads)
    import torch

    torch.backends.mkldnn.enabled = True  # capped by ONEDNN_MAX_CPU_ISA above
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != "AVX2":
        log.warning(
            "this CPU runs ATen kernels as %s, not AVX2: trained bytes may differ from AVX2/AVX-512 machines", cap
        )


_warned = False


def _warn_unpinned() -> None:
    global _warned
    _warned = True
    log.warning("torch was imported before numerics.pin(): trained bytes may depend on this CPU")


def ensure_pinned(threads: int) -> None:
    """Pin this process if it is not yet (a fresh worker), else check it was pinned (torch loaded)."""
    if "torch" not in sys.modules:
        pin(threads)
        return
    import torch

    if any(os.environ.get(k) != v for k, v in PINNED_ENV.items()) and not _warned:
        _warn_unpinned()

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def unpinned(threads: int | None = None) -> None:
    """The library defaults (for the benchmark's baseline): whatever the CPU offers."""
    import torch

    if threads:
        torch.set_num_threads(threads)
