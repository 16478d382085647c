"""Driver-behaviour pipeline: one module per DVC stage (demo, frames, landmarks, features, ...).

Nothing heavy is imported here: each stage imports MediaPipe, OpenCV or pyarrow itself. The
only work done at import is setting the CPU-numerics variables that numpy and OpenBLAS read
when they load (pipeline/core/cpu.py): the same bytes on any x86-64 CPU with AVX2.
"""

from pipeline.core.cpu import pin_env as _pin_env

_pin_env()
__version__ = "0.1.0"
