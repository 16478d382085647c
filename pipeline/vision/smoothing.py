"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) for per-frame feature series.

A low-pass filter whose cutoff rises with the signal's speed: a still face is smoothed hard
(jitter removed), a real head turn passes with little lag. ``cutoff = min_cutoff + beta *
|speed|``, the speed itself low-passed at ``d_cutoff``. Causal, one pass, NaN-aware: a NaN
frame (no face) stays NaN and restarts the filter at the next seen frame.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(
    x: np.ndarray, fps: float, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0
) -> np.ndarray:
    """Filter each column of ``x`` ((n,) or (n, k)) sampled at ``fps``."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(len(x), -1)
    out = np.full_like(flat, np.nan)
    dt = 1.0 / fps
    a_d = _alpha(d_cutoff, dt)
    for j in range(flat.shape[1]):
        prev = dprev = None
        for i, v in enumerate(flat[:, j]):
            if not math.isfinite(v):
                prev = dprev = None
                continue
            if prev is None:
                prev, dprev = v, 0.0
                out[i, j] = v
                continue
            d = a_d * ((v - prev) / dt) + (1 - a_d) * dprev
            a = _alpha(min_cutoff + beta * abs(d), dt)
            prev = a * v + (1 - a) * prev
            dprev = d
            out[i, j] = prev
    return out.reshape(x.shape)
