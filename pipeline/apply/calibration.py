"""A driver's baseline: the per-feature resting values subtracted before a model sees a window.

Models trained with ``windows.subject_baseline`` saw each training driver's features minus that
driver's own median (pipeline/contracts/windows.py :func:`subject_baseline`), so a driver who
sits lower, or whose camera looks up at them, reads the same as everybody else. A driver never
seen in training needs the same treatment; two ways, one definition (the median of the
:func:`~pipeline.contracts.windows.subject_baseline`, flags left at 0):

* ``subject`` (recorded video, the default of ``predict``): over all of the driver's frames in
  the run, exactly as in training;
* ``calibrate`` (the live monitor; ``predict --baseline calibrate``): over the driver's first
  ``apply.calibration_s`` seconds with a face visible. Until those are seen the driver is
  *calibrating*: no window is classified live and no alert is raised, and the output says so.
"""

from __future__ import annotations

import numpy as np

from pipeline.contracts.windows import FLAG_FEATURES, subject_baseline

BASELINES = ("subject", "calibrate", "none")


def flags(features: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.array([f in FLAG_FEATURES for f in features])


def median_baseline(x: np.ndarray, features: list[str] | tuple[str, ...]) -> np.ndarray:
    """(F,) resting values of one driver from their per-frame rows ``x`` (n, F)."""
    if len(x) == 0:
        return np.zeros(x.shape[1], np.float32)
    return subject_baseline(np.asarray(x, np.float32), np.zeros(len(x), np.int64), flags(features))[0]


def calibration_end(face_present: np.ndarray, seconds: float, fps: float) -> int:
    """Number of frames until ``seconds`` worth of frames with a face have been seen
    (-1: never, the whole input is calibration)."""
    need = max(1, round(seconds * fps))
    seen = np.cumsum(np.asarray(face_present) > 0)
    hit = np.flatnonzero(seen >= need)
    return int(hit[0]) + 1 if len(hit) else -1


def calibration_rows(face_present: np.ndarray, seconds: float, fps: float) -> np.ndarray:
    """Rows of the first ``seconds`` worth of frames with a face (fewer if the input is shorter)."""
    need = max(1, round(seconds * fps))
    return np.flatnonzero(np.asarray(face_present) > 0)[:need]
