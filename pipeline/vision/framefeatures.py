"""Named per-frame features from landmarks, for one video at a time.

Shared by the features stage and by prediction on new video and the live monitor
(pipeline/apply), so a frame becomes features the same way for training and for use.

All geometry is computed in isotropic source-pixel space, so the same face in a
16:9 or a 4:3 frame, or at another resolution, gives the same values.

Missing detections (stated policy): a face gap of at most ``features.max_gap_frames``
frames between two detected frames is linearly interpolated and flagged in
``face_filled``; longer gaps and gaps at a video's ends stay NaN with
``face_present = 0``. Hand distances are NaN when no hand is seen (never invented).
Frames the recording did not have (``stale``) count as frames without a face (the same gap
policy). Drowsiness features (blinks, PERCLOS, yawns: pipeline/vision/drowsiness.py) are
computed per video from the filled eye and mouth series; ``features.smooth`` applies the
One Euro filter to head pose.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import pandas as pd

from pipeline.contracts.features import DROWSINESS, REGISTRY
from pipeline.core.config import FeaturesParams
from pipeline.vision import geometry as g
from pipeline.vision.drowsiness import drowsiness_features
from pipeline.vision.smoothing import one_euro


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def ear(face: np.ndarray, eye: tuple[int, ...]) -> np.ndarray:
    """6-point eye aspect ratio (|p2-p6| + |p3-p5|) / (2 |p1-p4|) per frame."""
    p = face[:, list(eye)]
    return (_dist(p[:, 1], p[:, 5]) + _dist(p[:, 2], p[:, 4])) / (2 * _dist(p[:, 0], p[:, 3]))


def mar(face: np.ndarray) -> np.ndarray:
    """Mean inner-lip opening of three pairs over the inner-corner distance."""
    v = np.mean([_dist(face[:, a], face[:, b]) for a, b in g.MOUTH_PAIRS], axis=0)
    return v / _dist(face[:, g.MOUTH_CORNERS[0]], face[:, g.MOUTH_CORNERS[1]])


def head_pose(face: np.ndarray) -> np.ndarray:
    """(n, 3) yaw, pitch, roll in degrees from the landmarks' own 3D frame."""
    return g.angles_from_matrix(g.head_frame(face))


def gaze(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Iris-centre offsets from the eye centres, in eye widths, averaged over both eyes."""
    xs, ys = [], []
    for (a, b), iris in (((33, 133), g.IRIS_RIGHT_CENTER), ((362, 263), g.IRIS_LEFT_CENTER)):
        pa, pb, c = face[:, a, :2], face[:, b, :2], face[:, iris, :2]
        axis = pb - pa
        width = np.linalg.norm(axis, axis=-1)
        u = axis / width[:, None]
        perp = np.stack([-u[:, 1], u[:, 0]], axis=-1)  # image-down for a level eye
        rel = c - (pa + pb) / 2
        xs.append((rel * u).sum(-1) / width)
        ys.append((rel * perp).sum(-1) / width)
    return np.mean(xs, axis=0), np.mean(ys, axis=0)


def hand_distances(face: np.ndarray, hands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hand point to the nose tip / to either ear, in outer-eye-corner distances (2D)."""
    scale = _dist(face[:, 33], face[:, 263])
    pts = hands[..., :2].reshape(len(hands), -1, 2)  # (n, 2*21, 2), NaN for absent hands

    def nearest(target: np.ndarray) -> np.ndarray:  # target (n, k, 2)
        d = np.linalg.norm(pts[:, :, None] - target[:, None], axis=-1)
        with np.errstate(invalid="ignore"):
            return np.where(
                np.isnan(d).all(axis=(1, 2)), np.nan, np.nanmin(np.where(np.isnan(d), np.inf, d), axis=(1, 2))
            )

    to_face = nearest(face[:, [g.NOSE_TIP], :2])
    to_ear = nearest(face[:, [g.EAR_RIGHT, g.EAR_LEFT], :2])
    return to_face / scale, to_ear / scale


def compute_frame_features(face: np.ndarray, hands: np.ndarray) -> dict[str, np.ndarray]:
    """All registry features for (n,478,3) faces (NaN rows = no face) and (n,2,21,3) hands."""
    face = face.astype(np.float64)
    present = np.isfinite(face[:, 0, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        pose = np.full((len(face), 3), np.nan)
        if present.any():
            pose[present] = head_pose(face[present])
        gx, gy = gaze(face)
        hf, he = hand_distances(face, hands.astype(np.float64))
        out = {
            "ear_left": ear(face, g.EYE_LEFT),
            "ear_right": ear(face, g.EYE_RIGHT),
            "mar": mar(face),
            "yaw": pose[:, 0],
            "pitch": pose[:, 1],
            "roll": pose[:, 2],
            "gaze_x": gx,
            "gaze_y": gy,
            "face_present": present.astype(np.float64),
            "hand_present": np.isfinite(hands[:, :, 0, 0]).any(axis=1).astype(np.float64),
            "hand_face_dist": hf,
            "hand_ear_dist": he,
        }
    assert list(out) == [k for k in REGISTRY if k not in DROWSINESS], "compute_frame_features and REGISTRY disagree"
    return out


def fill_short_gaps(values: np.ndarray, present: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate runs of ``~present`` no longer than ``max_gap`` with detections on both sides.

    Returns (values with those rows filled, boolean mask of filled rows). ``values`` is (n,) or (n, k).
    """
    n = len(present)
    filled = np.zeros(n, bool)
    out = values.astype(np.float64, copy=True)
    if max_gap <= 0 or present.all() or not present.any():
        return out, filled
    idx = np.flatnonzero(present)
    for a, b in itertools.pairwise(idx):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            w = (np.arange(1, gap + 1) / (gap + 1)).reshape(-1, *([1] * (out.ndim - 1)))
            out[a + 1 : b] = out[a] * (1 - w) + out[b] * w
            filled[a + 1 : b] = True
    return out, filled


SMOOTHED = ("yaw", "pitch", "roll")  # the One Euro filter's columns (EAR/MAR keep their fast events)


def video_features(batches: Iterable[dict[str, np.ndarray]], p: FeaturesParams, fps: float) -> pd.DataFrame:
    """Feature table of one video (``frame``, ``t`` + registry + ``face_filled``, ``stale``), streamed.

    Landmarks are read batch by batch; only the small per-frame feature table of the
    video is held, and the missing-detection policy is applied to it; the drowsiness
    features are computed from the filled eye and mouth series, then the optional filter.
    """
    parts = []
    for lm in batches:
        feats = compute_frame_features(lm["face"], lm["hands"])
        parts.append(
            pd.DataFrame(
                {
                    "frame": lm["frame"].astype(np.int32),
                    "t": lm["t"],
                    **{k: np.asarray(v, np.float64) for k, v in feats.items()},
                    "stale": lm["stale"].astype(np.int8),
                }
            )
        )
    df = pd.concat(parts, ignore_index=True)
    present = df["face_present"].to_numpy() > 0
    face_names = [k for k, f in REGISTRY.items() if f.face_derived]
    block, filled = fill_short_gaps(df[face_names].to_numpy(), present, p.max_gap_frames)
    df[face_names] = block
    ear = (df["ear_left"].to_numpy() + df["ear_right"].to_numpy()) / 2
    for k, v in drowsiness_features(ear, df["mar"].to_numpy(), fps, p).items():
        df[k] = v
    if p.smooth:
        df[list(SMOOTHED)] = one_euro(df[list(SMOOTHED)].to_numpy(), fps, p.smooth_min_cutoff, p.smooth_beta)
    df = df[["frame", "t", *REGISTRY, "stale"]]
    df[list(REGISTRY)] = df[list(REGISTRY)].astype(np.float32)
    df.insert(len(df.columns) - 1, "face_filled", filled.astype(np.int8))
    return df
