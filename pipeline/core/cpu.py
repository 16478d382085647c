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
* ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``: numba (MiniRocket's transform, the recurrent and
  convolution kernels of pipeline/modeling/kernels.py) compiles for the vector unit the CPU has,
  named, not detected feature by feature: ``skylake-avx512`` with 512-bit vectors on a CPU with
  AVX-512 (F, CD, BW, DQ, VL: Intel since Skylake-SP, AMD since Zen 4), else ``haswell`` (AVX2 +
  FMA: Intel since 2013, every AMD Zen). That is safe for the bytes because no numba code the
  pipeline runs uses ``fastmath`` (MiniRocket's kernels are compiled again without it,
  pipeline/modeling/baselines.py): without it LLVM keeps every sum in the written order and
  contracts no product, whatever the vector width (tests/test_numerics.py compiles the kernels for
  both targets, Zen 3 and generic AVX2, and compares the bytes). On an x86-64 CPU without AVX2/FMA
  (or another architecture) numba compiles for ``generic`` and the pipeline warns that its bytes may
  differ (pipeline/modeling/numerics.py). Compiled code is cached in ``NUMBA_CACHE_DIR`` (default
  ~/.cache/driver-pipeline/numba, one entry per target), not beside the sources, which DVC hashes.

Torch's variables (MKL, ATen, oneDNN) are set by :func:`pipeline.modeling.numerics.pin`.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

# numpy 1.26's dispatch targets above AVX2 (numpy.core._multiarray_umath.__cpu_dispatch__)
NUMPY_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL"
NUMBA_AVX2 = ("haswell", "")  # AVX2 + FMA: Intel since 2013 (Haswell), AMD since 2015 (Excavator, every Zen)
NUMBA_AVX512 = ("skylake-avx512", "-prefer-256-bit")  # LLVM would keep to 256-bit vectors on these CPUs
AVX512_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")  # what skylake-avx512 compiles for


def host_flags() -> list[str]:
    """The CPU's instruction-set flags as Linux names them (elsewhere from LLVM's view of the host);
    none off x86-64."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    try:
        return next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        import llvmlite.binding as llvm

        return [f[1:] for f in llvm.get_host_cpu_features().flatten().split(",") if f.startswith("+")]


def host_has_avx2() -> bool:
    """AVX2 and FMA here?"""
    flags = host_flags()
    return "avx2" in flags and "fma" in flags


def numba_target() -> tuple[str, str]:
    """numba's (CPU name, features) for this machine: the widest vector unit it has (see above)."""
    flags = host_flags()
    if not host_has_avx2():
        return "generic", ""
    return NUMBA_AVX512 if all(f in flags for f in AVX512_FLAGS) else NUMBA_AVX2


_NUMBA_CPU, _NUMBA_FEATURES = numba_target()
PROCESS_ENV = {
    "NPY_DISABLE_CPU_FEATURES": NUMPY_AVX512,
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_CPU_NAME": _NUMBA_CPU,
    "NUMBA_CPU_FEATURES": _NUMBA_FEATURES,
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
