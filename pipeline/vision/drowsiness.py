"""Drowsiness features from a video's eye and mouth opening: blinks, PERCLOS, yawns.

Pure functions on one video's per-frame series (``ear``: mean eye aspect ratio of both eyes,
``mar``: mouth aspect ratio, NaN where no face), at a constant frame rate. Given the driver's
open-eye level (taken from the whole video), every output is *causal*: the value at a frame
uses that frame and earlier ones only (a blink counts from the frame it ends), so the same
numbers can be computed live once the open level is known. Definitions (README "Drowsiness features" cites the sources):

* eye closure ``c = clip(1 - ear / open_ear, 0, 1)``, where ``open_ear`` is the driver's own
  open-eye level: the 90th percentile of the video's EAR (eyes are open most of the time, and
  a percentile is robust to a few wide-eyed frames);
* PERCLOS (P80): the share of the trailing window's face frames with ``c >= 0.8`` (the eye at
  least 80% closed relative to its open level);
* a blink: a run of frames with ``c >= blink_closure`` lasting at most ``blink_max_s`` (longer
  closures are not blinks; they count in PERCLOS). Its duration is the run's length (time the
  eye is at least ``blink_closure`` closed), its amplitude the peak closure, its closing and
  opening velocities the closure change per second from where the eye starts closing (10% of
  the peak closure, or the last local minimum) to the peak, and from the peak to where it is
  open again (10% of the peak, or the next local minimum);
* a yawn: a run of frames with ``mar >= yawn_mar`` lasting at least ``yawn_min_s``; it is
  flagged from the frame it reaches that length (causal), ``yawn_s`` counts its seconds so far.

Per frame, blink features are means over the blinks that ended in the trailing window (NaN
when there was none); rates are per minute of the window (of the video so far, while shorter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.config import FeaturesParams

OPEN_PERCENTILE = 90.0
PERCLOS_CLOSURE = 0.8


@dataclass(frozen=True)
class Blink:
    start: int  # first frame with closure >= blink_closure
    end: int  # last such frame
    peak: int
    duration_s: float
    amplitude: float  # peak closure, fraction of the open level
    close_vel: float  # closure per second while closing
    open_vel: float  # closure per second while opening


def eye_closure(ear: np.ndarray) -> np.ndarray:
    """Closure relative to the driver's own open-eye level (NaN where ``ear`` is NaN)."""
    seen = ear[np.isfinite(ear)]
    if len(seen) == 0:
        return np.full_like(ear, np.nan, dtype=np.float64)
    open_ear = float(np.percentile(seen, OPEN_PERCENTILE))
    if open_ear <= 0:
        return np.full_like(ear, np.nan, dtype=np.float64)
    return np.clip(1.0 - ear / open_ear, 0.0, 1.0)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True."""
    m = np.r_[False, mask, False].astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1, strict=True))


def blinks(closure: np.ndarray, fps: float, p: FeaturesParams) -> list[Blink]:
    """Blink events in a closure series (NaN frames end a run and are never part of one)."""
    c = np.nan_to_num(closure, nan=0.0)
    dt = 1.0 / fps
    out = []
    for a, b in _runs(np.isfinite(closure) & (c >= p.blink_closure)):
        duration = (b - a + 1) * dt
        if duration > p.blink_max_s + 1e-9:
            continue
        peak = a + int(np.argmax(c[a : b + 1]))
        floor = 0.1 * c[peak]  # closing starts / opening ends at 10% of the peak closure (or a local minimum)
        lo = a
        while lo > 0 and np.isfinite(closure[lo - 1]) and floor < c[lo] and c[lo - 1] < c[lo]:
            lo -= 1
        hi = b
        while hi < len(c) - 1 and np.isfinite(closure[hi + 1]) and floor < c[hi] and c[hi + 1] < c[hi]:
            hi += 1
        close_vel = (c[peak] - c[lo]) / max(peak - lo, 1) / dt
        open_vel = (c[peak] - c[hi]) / max(hi - peak, 1) / dt
        out.append(Blink(a, b, peak, duration, float(c[peak]), float(close_vel), float(open_vel)))
    return out


def _trailing_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``x[max(0, i - n + 1) : i + 1]`` for every i."""
    cs = np.r_[0.0, np.cumsum(x)]
    i = np.arange(len(x))
    return cs[i + 1] - cs[np.maximum(0, i + 1 - n)]


def drowsiness_features(ear: np.ndarray, mar: np.ndarray, fps: float, p: FeaturesParams) -> dict[str, np.ndarray]:
    """All per-frame drowsiness features of one video at ``fps`` (see the module docstring);
    ``p`` gives the window (``drowsy_window_s``) and the blink and yawn thresholds."""
    n = len(ear)
    w = max(1, round(p.drowsy_window_s * fps))
    seen = np.isfinite(ear).astype(np.float64)
    closure = eye_closure(ear)
    closed = (np.nan_to_num(closure) >= PERCLOS_CLOSURE) & (seen > 0)
    n_seen = _trailing_sum(seen, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        perclos = np.where(n_seen > 0, _trailing_sum(closed.astype(np.float64), w) / n_seen, np.nan)
    minutes = np.minimum(np.arange(1, n + 1), w) / fps / 60.0

    found = blinks(closure, fps, p)
    ended = np.zeros(n)
    props = {k: np.zeros(n) for k in ("duration_s", "amplitude", "close_vel", "open_vel")}
    for bl in found:
        ended[bl.end] += 1
        for k in props:
            props[k][bl.end] += getattr(bl, k)
    count = _trailing_sum(ended, w)
    out = {"perclos": perclos, "blink_rate": count / minutes}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, k in (
            ("blink_duration", "duration_s"),
            ("blink_amplitude", "amplitude"),
            ("blink_close_vel", "close_vel"),
            ("blink_open_vel", "open_vel"),
        ):
            out[name] = np.where(count > 0, _trailing_sum(props[k], w) / count, np.nan)

    yawning = np.zeros(n)
    yawn_s = np.zeros(n)
    started = np.zeros(n)
    need = max(1, round(p.yawn_min_s * fps))
    m = np.nan_to_num(mar, nan=0.0)
    for a, b in _runs(np.isfinite(mar) & (m >= p.yawn_mar)):
        if b - a + 1 < need:
            continue
        flag_from = a + need - 1
        yawning[flag_from : b + 1] = 1
        yawn_s[flag_from : b + 1] = (np.arange(flag_from, b + 1) - a + 1) / fps
        started[flag_from] = 1
    out |= {"yawning": yawning, "yawn_s": yawn_s, "yawn_rate": _trailing_sum(started, w) / minutes}
    return out
