"""CPU-independent numerics for every pipeline process: environment only, set before numpy loads.

Measured (tests/test_numerics.py, ``driver-pipeline fingerprint``): on the same data, numpy and
OpenBLAS pick their kernels by CPU, so an Intel AVX-512 machine, an AMD one and an AVX2-only
laptop computed other bytes for features (``arctan2`` in head pose), statistics models
(logistic regression, gradient boosting) and MiniRocket's ridge fit. The libraries read these
variables once, when they load, so :func:`pin_env` runs at ``import pipeline`` (the first
thing every stage and command does):

* ``NPY_DISABLE_CPU_FEATURES``: numpy's AVX-512 loops are switched off, so every x86-64 CPU
  with AVX2 runs the same AVX2/FMA3 loops (float64 exp/log/arctan2/sqrt, sums);
* ``OPENBLAS_CORETYPE=Haswell``: numpy's and scipy's BLAS/LAPACK use the AVX2 kernels on
  every CPU (OpenBLAS picks Zen = the same kernels on AMD, SkylakeX on Intel AVX-512, other
  bytes); ``OPENBLAS_NUM_THREADS=1``: its dot products split their sums across threads;
* ``NUMBA_CPU_NAME=haswell`` with ``NUMBA_CPU_FEATURES`` empty: numba (MiniRocket, the recurrent
  kernels of pipeline/modeling/kernels.py) compiles for one fixed target, AVX2 + FMA, whatever
  the host; otherwise it would compile for the CPU it finds (and MiniRocket's ``fastmath``
  code would sum in another order on an AVX-512 CPU). On an x86-64 CPU without AVX2/FMA (or
  another architecture) that code would not run: there numba compiles for ``generic`` and the
  pipeline warns that its bytes may differ (pipeline/modeling/numerics.py). Compiled code is
  cached in ``NUMBA_CACHE_DIR`` (default ~/.cache/driver-pipeline/numba), not beside the
  sources, which DVC hashes.

Torch's variables (MKL, ATen, oneDNN) are set by :func:`pipeline.modeling.numerics.pin`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# numpy 1.26's dispatch targets above AVX2 (numpy.core._multiarray_umath.__cpu_dispatch__)
NUMPY_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
NUMBA_TARGET = "haswell"  # AVX2 + FMA: Intel since 2013 (Haswell), AMD since 2015 (Excavator, every Zen)


def host_has_avx2() -> bool:
    """AVX2 and FMA here (Linux: /proc/cpuinfo; elsewhere LLVM's view of the host)?"""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        import llvmlite.binding as llvm

        flags = [f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")]
    return "avx2" in flags and "fma" in flags


PROCESS_ENV = {
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512,
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_CPU_NAME": NUMBA_TARGET if host_has_avx2() else "generic",
    "NUMBA_CPU_FEATURES": "",
}
LOADS_AT_IMPORT = ("numpy", "numba")  # read the variables when they load


def pin_env() -> list[str]:
    """Set the process variables; return the libraries that were loaded before (not pinned here)."""
    os.environ.update(PROCESS_ENV)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "driver-pipeline" / "numba"
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))
    return [m for m in LOADS_AT_IMPORT if m in sys.modules]


def is_pinned() -> bool:
    """Did numpy load with the pinned dispatch (i.e. after :func:`pin_env`)?"""
    from numpy.core._multiarray_umath import __cpu_features__

    return not __cpu_features__.get("AVX512F", False)


def require_pinned(where: str) -> None:
    """Refuse to compute in a process whose numpy loaded before :func:`pin_env` (its kernels, and so
    the bytes, would be this CPU's): e.g. a Dask worker started with plain ``dask worker``, which
    imports numpy before anything of ours."""
    if not is_pinned():
        from pipeline.core.errors import ConfigError

        raise ConfigError(
            f"{where}: this process loaded numpy before the pipeline pinned its CPU kernels, so its results "
            "would depend on this CPU; start Dask workers with `driver-pipeline dask-worker SCHEDULER_ADDRESS` "
            "(or with the variables of `driver-pipeline dask-worker --print-env` set)"
        )
