"""Landmarks of one video, frame by frame: FaceMesh (the driver picked among up to ``max_faces``
faces) and Hands on a schedule. Shared by the landmarks stage, prediction on new video and the
live monitor (pipeline/apply), so a frame is measured the same way for training and for use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.contracts.frames import Plan, iter_frames
from pipeline.contracts.landmarks import Hand, LandmarksWriter
from pipeline.core.config import LandmarksParams
from pipeline.vision import mediapipe as mpa
from pipeline.vision.driver import DriverPicker
from pipeline.vision.geometry import N_FACE, N_HAND, Letterbox
from pipeline.vision.video import VideoError


class Landmarker:
    """FaceMesh + Hands graphs in tracking mode, for ONE stream of frames (tracking state is per stream).

    FaceMesh runs on every frame that is not stale (up to ``max_faces`` faces; the driver is
    picked by :class:`DriverPicker`); Hands runs on every ``hands_every``-th of them and its
    result is held for the frames in between (never across a stale frame). Points are mapped
    from the letterboxed canvas back to source pixels with ``box``.
    """

    def __init__(self, p: LandmarksParams, box: Letterbox) -> None:
        self.p, self.box = p, box
        self.mul, self.add = box.normalized_affine()
        self.picker = DriverPicker(box.src_w, box.src_h, tuple(p.driver_region))
        self.fm = mpa.face_mesh(False, p.min_detection_confidence, p.min_tracking_confidence, p.max_faces)
        self.hd = None
        if p.hands:
            self.hd = mpa.hands(p.hands_complexity, p.min_detection_confidence, p.min_tracking_confidence)
        self.found: list[Hand] = []
        self.since_hands = p.hands_every  # run Hands on the first usable frame

    def process(self, img: np.ndarray) -> tuple[np.ndarray | None, list[Hand], int]:
        """One letterboxed RGB frame -> (the driver's (478, 3) face or None, hands, faces seen)."""
        res = self.fm.process(img)
        faces = [mpa.landmark_array(f, N_FACE) * self.mul + self.add for f in res.multi_face_landmarks or []]
        i = self.picker.pick(faces)
        face = faces[i] if i is not None else None
        if self.hd is not None and self.since_hands >= self.p.hands_every:
            self.since_hands = 0
            self.found = []
            hr = self.hd.process(img)
            if hr.multi_hand_landmarks:
                for hl, hh in zip(hr.multi_hand_landmarks, hr.multi_handedness, strict=False):
                    c = hh.classification[0]
                    self.found.append((mpa.landmark_array(hl, N_HAND) * self.mul + self.add, c.label, float(c.score)))
        self.since_hands += 1
        return face, self.found, len(faces)

    def skip(self) -> None:
        """A stale frame (nothing to see): held hands are dropped, Hands runs on the next frame."""
        self.found, self.since_hands = [], self.p.hands_every

    def close(self) -> None:
        self.fm.close()
        if self.hd is not None:
            self.hd.close()

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def landmarks_meta(plan: Plan, p: LandmarksParams, rel: str) -> dict:
    """The landmarks file's schema metadata (contracts/landmarks.py)."""
    return {
        "letterbox": plan.box.as_dict(),
        "video": rel,
        "fps": plan.fps,
        "space": "source pixels; z on the x scale",
        "hands": p.hands,
        "hands_every": p.hands_every,
        "max_faces": p.max_faces,
        "driver_region": list(p.driver_region),
    }


def detect_video(video: Path, plan: Plan, p: LandmarksParams, out: Path, rel: str, progress=None) -> dict:
    """Run the models over the streamed frames of one video and write its landmarks Parquet.

    ``progress`` (optional) is called with the number of frames done after each frame.
    Returns counts; raises :class:`VideoError` when the video must be quarantined.
    """
    import cv2

    cv2.setNumThreads(1)
    stale = plan.stale if plan.stale is not None else np.zeros(plan.n, bool)
    n_face = n_hand = n_multi = 0
    meta = landmarks_meta(plan, p, rel)
    with mpa.quiet_native_stderr(), Landmarker(p, plan.box) as lm, LandmarksWriter(out, meta) as w:
        for k, img in iter_frames(video, plan):
            if stale[k]:  # the recorder dropped frames here: nothing is measured
                w.add(k, k / plan.fps, None, [], 0, stale=True)
                lm.skip()
            else:
                face, hands, faces = lm.process(img)
                n_multi += faces > 1
                n_face += face is not None
                n_hand += bool(hands)
                w.add(k, k / plan.fps, face, hands, faces)
            if progress is not None:
                progress(k + 1)
        if n_face == 0:
            raise VideoError(f"no face found in any of {plan.n} frames")
    return {
        "frames": plan.n,
        "usable_frames": int((~stale).sum()),
        "face_frames": n_face,
        "hand_frames": n_hand,
        "multi_face_frames": n_multi,
    }
