"""From a source video to its frame plan: presentation times, resampling to a fixed rate, stale frames.

Shared by the frames stage and by prediction on new video (pipeline/apply), so a video is
planned the same way for training and for use. Frames are taken as a player shows them: the
container's rotation tag is applied, and the output frame at time k/fps shows the source frame
nearest in presentation time (a variable frame rate is not re-timed). An output frame with no
source frame near it is ``stale``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.contracts.frames import Plan
from pipeline.contracts.labels import Segment
from pipeline.core.config import FramesParams
from pipeline.vision.geometry import Letterbox, letterbox_image
from pipeline.vision.video import VideoError, open_video

SEGMENT_SLACK_S = 1.0  # a labelled segment may end this much after the last frame (rounding, trims)


def source_times(pts: list[float], nominal_fps: float) -> tuple[np.ndarray, str]:
    """Seconds of each decoded frame from the first one, from the container's presentation times
    (``"pts"``); the nominal rate (``"nominal"``) only when those are missing or not increasing."""
    t = np.asarray(pts, np.float64)
    if len(t) > 1 and np.isfinite(t).all() and (np.diff(t) > 0).all():
        return t - t[0], "pts"
    return np.arange(len(t)) / nominal_fps, "nominal"


def resample_times(src_t: np.ndarray, fps: float) -> np.ndarray:
    """Source frame nearest in presentation time to each output time k/fps (the earlier one on a
    tie), while k/fps is inside the video (its last frame lasts one typical frame interval)."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else 1.0 / fps
    duration = float(src_t[-1]) + step
    n = int(np.floor(duration * fps + 1e-9))
    out_t = np.arange(n) / fps
    before = np.searchsorted(src_t, out_t + 1e-9, side="right") - 1
    after = np.minimum(before + 1, len(src_t) - 1)
    later_is_nearer = src_t[after] - out_t < out_t - src_t[before] - 1e-9
    return np.where(later_is_nearer, after, before)


def resample_index(src_frames: int, src_fps: float, fps: float) -> np.ndarray:
    """:func:`resample_times` for a constant-rate source."""
    return resample_times(np.arange(src_frames) / src_fps, fps)


def stale_frames(src_t: np.ndarray, idx: np.ndarray, fps: float) -> np.ndarray:
    """Output frames with no source frame near them: farther from the one they show than one output
    frame period, or than half the source's typical spacing when that is longer (a slow source)."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else 0.0
    tol = max(1.0 / fps, step / 2) * (1 + 1e-6)
    return np.abs(np.arange(len(idx)) / fps - src_t[idx]) > tol


def gaps(src_t: np.ndarray, max_gap_s: float) -> list[tuple[float, float]]:
    """(start, length) in seconds of every stretch without a new frame longer than ``max_gap_s``."""
    d = np.diff(src_t)
    return [(float(src_t[i]), float(d[i])) for i in np.flatnonzero(d > max_gap_s)]


def timing_problems(src_t: np.ndarray, f: FramesParams, segments: tuple[Segment, ...]) -> tuple[str | None, list[str]]:
    """(quarantine reason or None, warnings) for a video's frame times and its labelled segments."""
    step = float(np.median(np.diff(src_t))) if len(src_t) > 1 else float("inf")
    rate = 1.0 / step
    if rate < f.min_src_fps:
        return (
            f"too sparse: {rate:.2g} source frames per second (median spacing {step:.2f} s), below "
            f"frames.min_src_fps {f.min_src_fps:g}; at {f.fps:g} fps each frame would be repeated "
            f"{f.fps / rate:.0f} times. Lower frames.min_src_fps to accept it",
            [],
        )
    duration = float(src_t[-1]) + step
    for s in segments:
        if s.start_s >= duration:  # an open-ended segment too: it would label nothing
            return (
                f"labelled segment '{s.label}' {s.start_s:g}-{s.end_s:g} s starts after the video ends "
                f"({duration:.2f} s long): seconds vs milliseconds? Fix its start_s/end_s in the labels file",
                [],
            )
        if np.isfinite(s.end_s) and s.end_s > duration + SEGMENT_SLACK_S:
            return (
                f"labelled segment '{s.label}' {s.start_s:g}-{s.end_s:g} s ends after the video "
                f"({duration:.2f} s long): seconds vs milliseconds? Fix its start_s/end_s in the labels file",
                [],
            )
    warnings = []
    found = gaps(src_t, f.max_gap_s)
    if found:
        longest = max(found, key=lambda g: g[1])
        warnings.append(
            f"{len(found)} stretch(es) without frames longer than frames.max_gap_s {f.max_gap_s:g} s "
            f"({sum(g[1] for g in found):.1f} s in all, longest {longest[1]:.1f} s at {longest[0]:.1f} s): "
            "output frames there are marked stale and get no landmarks"
        )
    return None, warnings


def plan_video(path: Path, f: FramesParams, min_frames: int, segments: tuple[Segment, ...] = ()) -> tuple[Plan, dict]:
    """Decode the whole video once: validate it, plan the resampling, measure frame QC.

    Raises :class:`VideoError` (the quarantine reason) for unusable input. The returned dict
    holds the per-output-frame QC columns and ``warnings`` (kept in the manifest).
    """
    import cv2

    with open_video(path) as (info, frames):
        w, h = info.width, info.height
        box = Letterbox.fit(w, h, f.canvas)
        iw, ih = box.inner_size
        inner = (slice(box.pad_y, box.pad_y + ih), slice(box.pad_x, box.pad_x + iw))
        canvas_img = np.zeros((box.canvas_h, box.canvas_w, 3), np.uint8)
        means: list[float] = []
        stds: list[float] = []
        pts: list[float] = []
        for t, frame in frames:
            if frame.shape[:2] != (h, w):
                raise VideoError(f"frame size changes mid-video ({frame.shape[1]}x{frame.shape[0]} vs {w}x{h})")
            letterbox_image(frame, box, out=canvas_img)
            m, s = cv2.meanStdDev(cv2.cvtColor(canvas_img[inner], cv2.COLOR_BGR2GRAY))
            means.append(float(m[0, 0]))
            stds.append(float(s[0, 0]))
            pts.append(t)
    decoded = len(means)
    if decoded == 0:
        raise VideoError("no decodable frames (corrupt or truncated video)")
    if info.count > 0 and decoded < 0.9 * info.count:
        raise VideoError(f"truncated: decoded {decoded} of {info.count} frames the header announces")
    src_t, timing = source_times(pts, info.fps)
    reason, warnings = timing_problems(src_t, f, segments)
    if reason:
        raise VideoError(reason)
    if timing == "nominal" and decoded > 1:
        warnings.append(f"no usable presentation times in the file: frames timed at its nominal {info.fps:g} fps")
    idx = resample_times(src_t, f.fps)
    if len(idx) < min_frames:
        raise VideoError(
            f"too short: {len(idx)} frames at {f.fps:g} fps ({src_t[-1]:.2f} s); "
            f"one window needs {min_frames} (params windows.size)"
        )
    qc = {
        "luma_mean": np.asarray(means, np.float32)[idx],
        "luma_std": np.asarray(stds, np.float32)[idx],
        "src_t": src_t[idx],
        "stale": stale_frames(src_t, idx, f.fps),
    }
    src_fps = (decoded - 1) / float(src_t[-1]) if decoded > 1 else info.fps
    return Plan(box, src_fps, decoded, f.fps, idx, info.rotation, timing, qc["stale"]), {**qc, "warnings": warnings}
