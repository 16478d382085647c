"""Pictures for people: the face mesh, the current class and the class probabilities drawn on a
frame (the live monitor's overlay and ``predict --annotate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.apply.model import AppliedModel
from pipeline.contracts.frames import Plan
from pipeline.contracts.labels import VideoEntry
from pipeline.contracts.landmarks import read_landmarks
from pipeline.core.files import atomic_path
from pipeline.vision.video import decode

MAX_WIDTH = 640  # annotated videos are scaled down to this width (file size; the mesh stays visible)
MESH_DOT = 1  # radius in pixels of a mesh point: a 3-pixel dot


def overlay(img: np.ndarray, face: np.ndarray | None, probs: dict[str, float] | None, label: str, scale: float = 1.0):
    """Draw on BGR ``img`` in place: mesh points (source pixels x ``scale``), label, probability bars."""
    import cv2

    h, w = img.shape[:2]
    if face is not None and np.isfinite(face).all():
        xy = np.round(face[:, :2] * scale).astype(np.int64)
        ok = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        for x, y in xy[ok]:  # dots, not single pixels: visible after the video is scaled and compressed
            cv2.circle(img, (int(x), int(y)), MESH_DOT, (0, 255, 0), -1, cv2.LINE_8)
    cv2.rectangle(img, (0, 0), (min(w, 220), 18 + 14 * len(probs or {})), (0, 0, 0), -1)
    cv2.putText(img, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    for i, (c, p) in enumerate((probs or {}).items()):
        y = 18 + 14 * i
        cv2.rectangle(img, (80, y + 2), (80 + int(130 * p), y + 11), (0, 200, 255), -1)
        cv2.putText(img, c[:10], (4, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def annotate_video(
    e: VideoEntry, model: AppliedModel, plan: Plan, tl: pd.DataFrame, landmarks: Path, out: Path
) -> None:
    """The video at the model's frame rate, upright, with the mesh and the latest window's decision
    (the window that ended at or before each frame), as MPEG-4 (``mp4v``: written by every OpenCV build)."""
    import cv2

    lm = read_landmarks(landmarks)
    scale = min(1.0, MAX_WIDTH / plan.box.src_w)
    size = (round(plan.box.src_w * scale) // 2 * 2, round(plan.box.src_h * scale) // 2 * 2)
    ends = tl["end_frame"].to_numpy()
    cols = [f"p_{c}" for c in model.classes]
    probs_all = tl[cols].to_numpy()
    with atomic_path(out, keep_suffix=True) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), plan.fps, size)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {out} with the mp4v codec")
        try:
            k = 0
            for i, (_, frame) in enumerate(decode(e.path, plan.rotation)):
                if k >= plan.n:
                    break
                if plan.src_index[k] != i:
                    continue
                small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
                while k < plan.n and plan.src_index[k] == i:
                    j = int(np.searchsorted(ends, k, side="right")) - 1  # the latest window ended by frame k
                    if j >= 0:
                        probs = dict(zip(model.classes, probs_all[j], strict=True))
                        label = tl["label"].iloc[j] or "(no decision)"
                    else:
                        probs, label = None, "(first window not complete)"
                    face = lm["face"][k] if lm["face_present"][k] else None
                    writer.write(overlay(small.copy(), face, probs, label, scale))
                    k += 1
        finally:
            writer.release()
