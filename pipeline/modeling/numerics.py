"""CPU-independent numerics for training and evaluation: same data + params -> same model bytes
on any x86-64 CPU with AVX2, Intel or AMD.

numpy, OpenBLAS and numba are pinned for every process at ``import pipeline``
(pipeline/core/cpu.py). :func:`pin` adds torch's side, before torch loads:

* matrix products (``mm``, ``addmm``, ``bmm``: every ``nn.Linear`` and attention product, the
  recurrent layers' and the convolutions' products) run on our own product kernel
  (pipeline/modeling/kernels.matmul: every element one chain of fused multiply-adds over k in
  order, so the same bytes whatever vector width the CPU computes it with; AVX-512 where the CPU
  has it). Not MKL: its fast reproducible branches (AVX2, AVX-512) exist on Intel processors only
  and its one cross-vendor branch (COMPATIBLE, SSE2) doubled the transformer's training time; MKL
  stays pinned to that branch for any product torch computes inside its own kernels. Not OpenBLAS
  (pinned to its AVX2 kernels, the same bytes on every CPU too, and what these products ran on
  until 2026-12-03): on an AVX-512 CPU ours is 1.3-1.6x faster;
* ATen's own vectorised kernels: ``ATEN_CPU_CAPABILITY=avx2`` (every AVX2 and AVX-512 CPU runs
  the same AVX2 kernels; a CPU without AVX2 is warned about);
* recurrent layers: our own kernels (pipeline/modeling/kernels.py: numba code without ``fastmath``,
  products as fused multiply-adds in a fixed order, our own ``exp``), not torch's,
  whose oneDNN kernels are generated for the CPU at run time (capped at AVX2 they pick brgemm
  kernels whose K-blocking follows the L2 cache size). No model runs oneDNN;
  ``ONEDNN_MAX_CPU_ISA=AVX`` stays as a guard;
* dropout masks come from ``torch.rand`` (pipeline/modeling/zoo.Dropout): torch's own dropout
  draws them with MKL's generator on Intel and with ATen's on AMD (a vendor check in ATen);
* threads: a fixed count (params ``train.threads``), since reductions split by thread.

The environment variables are read when torch loads MKL and dispatches its first kernel, so
:func:`pin` must run before ``import torch``; stages call it first thing.
``driver-pipeline fingerprint`` hashes every kernel the models use (tests compare it with
the committed reference, tests/data/numerics_reference.json).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from pipeline.core.cpu import PROCESS_ENV

log = logging.getLogger(__name__)
TORCH_ENV = {
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX",
}
PINNED_ENV = {**PROCESS_ENV, **TORCH_ENV}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_library = None  # the torch.library registration (kept alive: dropping it restores MKL)


def pin(threads: int, torch: bool = True) -> None:
    """Pin CPU numerics for this process (call before torch is imported). ``torch=False``, for models
    that never use it (statistics, MiniRocket), sets the variables only and leaves torch unloaded:
    importing it costs a stage process 2-3 s."""
    if "torch" in sys.modules:
        raise RuntimeError("numerics.pin() must run before torch is imported (MKL reads MKL_CBWR at load)")
    os.environ.update(PINNED_ENV)
    for k in THREAD_ENV:
        os.environ[k] = str(threads)
    if torch:
        _pin_torch(threads)


def _pin_torch(threads: int) -> None:
    import torch

    torch.backends.mkldnn.enabled = True  # capped by ONEDNN_MAX_CPU_ISA above
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    route_matmuls()
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != "AVX2":
        log.warning(
            "this CPU runs ATen kernels as %s, not AVX2: trained bytes may differ from AVX2/AVX-512 machines", cap
        )


def _np(t):
    return t.detach().numpy()


def _mm(a, b):
    import numpy as np
    import torch

    from pipeline.modeling import kernels

    x, y = _np(a), _np(b)
    if x.dtype not in (np.float32, np.float64):  # integers: exact in any order
        return torch.from_numpy(np.matmul(x, y))
    return torch.from_numpy(kernels.product(x, y))


def _addmm(bias, a, b, *, beta=1, alpha=1):
    out = _mm(a, b)
    if alpha != 1:
        out.mul_(alpha)
    if beta == 0:
        return out
    return out.add_(bias if beta == 1 else bias * beta)


def route_matmuls() -> None:
    """Replace torch's CPU kernels of ``mm``, ``addmm`` and ``bmm`` (MKL) by numpy's matmul
    (OpenBLAS, pinned to its AVX2 kernels and one thread by pipeline/core/cpu.py)."""
    global _library
    if _library is not None:
        return
    import torch

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
        lib.impl("mm", _mm, "CPU")
        lib.impl("bmm", _mm, "CPU")
        lib.impl("addmm", _addmm, "CPU")
    _library = lib


_warned = False


def _warn_unpinned() -> None:
    global _warned
    _warned = True
    log.warning("torch was imported before numerics.pin(): trained bytes may depend on this CPU")


def ensure_pinned(threads: int, torch: bool = True) -> None:
    """Pin this process if it is not yet (a fresh worker), else check it was pinned (torch loaded)."""
    if "torch" not in sys.modules:
        if torch and all(os.environ.get(k) == v for k, v in PINNED_ENV.items()):
            _pin_torch(threads)  # pinned without torch so far; the variables are set
        else:
            pin(threads, torch)
        return
    import torch

    if (any(os.environ.get(k) != v for k, v in PINNED_ENV.items()) or _library is None) and not _warned:
        _warn_unpinned()

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def unpinned(threads: int | None = None) -> None:
    """The library defaults (for the benchmark's baseline): whatever the CPU offers."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def resolve_device(name: str) -> str:
    """params ``train.device`` -> the torch device to train on. ``auto``: the first GPU when torch finds
    one (CUDA), else the CPU. A GPU run is deterministic on that GPU (cuDNN's deterministic
    algorithms) but gives other bytes than the CPU and than other GPU models (README)."""
    import torch

    from pipeline.core.errors import ConfigError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"params key 'train.device' is '{name}' but torch finds no GPU here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use 'auto' or 'cpu'"
            )
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return name
