"""Shared geometry: the letterbox transform, head rotations and MediaPipe indices.

Conventions (image coordinates: x right, y down, z away from the camera, all in
*source pixels* so geometry is isotropic whatever the frame's aspect ratio):

* yaw > 0: the nose turns towards image right;
* pitch > 0: the nose tilts up;
* roll > 0: the head tilts clockwise in the image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# --- MediaPipe FaceMesh (478 points with refine_landmarks=True) -----------------------
N_FACE = 478
N_HAND = 21
# Eye contours for the 6-point eye aspect ratio: corner, 2 upper, corner, 2 lower.
# "right"/"left" are the subject's, so the right eye appears on the image's left.
EYE_RIGHT = (33, 160, 158, 133, 153, 144)
EYE_LEFT = (362, 385, 387, 263, 373, 380)
EYE_RIGHT_UPPER = (246, 161, 160, 159, 158, 157, 173)
EYE_RIGHT_LOWER = (7, 163, 144, 145, 153, 154, 155)
EYE_LEFT_UPPER = (398, 384, 385, 386, 387, 388, 466)
EYE_LEFT_LOWER = (382, 381, 380, 374, 373, 390, 249)
EYE_RIGHT_CONTOUR = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
EYE_LEFT_CONTOUR = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
IRIS_RIGHT_CENTER = 468
IRIS_LEFT_CENTER = 473
# Mouth: inner-lip vertical pairs and the inner corners.
MOUTH_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (78, 308)
MOUTH_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)
NOSE_TIP = 1
EAR_RIGHT = 234  # face-outline point beside the subject's right ear (image left)
EAR_LEFT = 454
# Points that stay rigid when eyes and mouth move: used for the head frame.
EYE_AXIS = ((33, 263), (133, 362), (130, 359))  # (subject-right, subject-left) pairs
UP_AXIS = ((152, 10), (175, 151), (199, 9))  # (chin side, forehead side) pairs


# --- letterbox ------------------------------------------------------------------------
@dataclass(frozen=True)
class Letterbox:
    """Source (src_w x src_h) scaled by ``scale`` and pasted at (pad_x, pad_y) on a canvas."""

    src_w: int
    src_h: int
    canvas_w: int
    canvas_h: int
    scale: float
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, src_w: int, src_h: int, canvas_w: int, canvas_h: int | None = None) -> Letterbox:
        canvas_h = canvas_w if canvas_h is None else canvas_h
        scale = min(canvas_w / src_w, canvas_h / src_h)
        new_w, new_h = round(src_w * scale), round(src_h * scale)
        return cls(src_w, src_h, canvas_w, canvas_h, scale, (canvas_w - new_w) // 2, (canvas_h - new_h) // 2)

    @property
    def inner_size(self) -> tuple[int, int]:
        return round(self.src_w * self.scale), round(self.src_h * self.scale)

    def to_source(self, xy_canvas: np.ndarray) -> np.ndarray:
        """Canvas pixel coordinates (..., 2) -> source pixel coordinates."""
        xy = np.asarray(xy_canvas, dtype=np.float64)
        sx = self.inner_size[0] / self.src_w
        sy = self.inner_size[1] / self.src_h
        return np.stack([(xy[..., 0] - self.pad_x) / sx, (xy[..., 1] - self.pad_y) / sy], axis=-1)

    def to_canvas(self, xy_src: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_src, dtype=np.float64)
        sx = self.inner_size[0] / self.src_w
        sy = self.inner_size[1] / self.src_h
        return np.stack([xy[..., 0] * sx + self.pad_x, xy[..., 1] * sy + self.pad_y], axis=-1)

    def normalized_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(mul, add) with ``source = normalised * mul + add`` for MediaPipe (x, y, z) points.

        MediaPipe's z uses the same scale as x (canvas width), so it is mapped with it.
        """
        sx = self.inner_size[0] / self.src_w
        sy = self.inner_size[1] / self.src_h
        mul = np.array([self.canvas_w / sx, self.canvas_h / sy, self.canvas_w / sx])
        add = np.array([-self.pad_x / sx, -self.pad_y / sy, 0.0])
        return mul, add

    def normalized_to_source(self, pts: np.ndarray) -> np.ndarray:
        """MediaPipe output (..., 3) normalised to the canvas -> source pixels (x, y, z)."""
        mul, add = self.normalized_affine()
        return np.asarray(pts, dtype=np.float64) * mul + add

    def as_dict(self) -> dict:
        return asdict(self)


def letterbox_image(img: np.ndarray, box: Letterbox, out: np.ndarray | None = None) -> np.ndarray:
    """Resize ``img`` keeping its aspect ratio and paste it centred on a black canvas."""
    import cv2

    if out is None:
        out = np.zeros((box.canvas_h, box.canvas_w, 3), np.uint8)
    w, h = box.inner_size
    region = out[box.pad_y : box.pad_y + h, box.pad_x : box.pad_x + w]
    if (w, h) == (box.src_w, box.src_h):
        region[...] = img
    else:
        cv2.resize(img, (w, h), dst=region, interpolation=cv2.INTER_LINEAR)
    return out


# --- rotations ------------------------------------------------------------------------
def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation (degrees) in image coordinates, composed R = Ry(-yaw) Rx(pitch) Rz(roll)."""
    a, b, c = np.radians([-yaw, pitch, roll])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def angles_from_matrix(r: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rotation_matrix` for a stack (..., 3, 3) -> (..., 3) degrees."""
    pitch = np.degrees(np.arcsin(np.clip(-r[..., 1, 2], -1, 1)))
    roll = np.degrees(np.arctan2(r[..., 1, 0], r[..., 1, 1]))
    yaw = -np.degrees(np.arctan2(r[..., 0, 2], r[..., 2, 2]))
    return np.stack([yaw, pitch, roll], axis=-1)


def head_frame(face: np.ndarray) -> np.ndarray:
    """Orthonormal head frame (..., 3, 3) from face landmarks (..., 478, 3), columns x, y, z.

    x: subject-right eye -> subject-left eye (image right on a frontal face);
    y: forehead -> chin (image down); z = x cross y (away from the camera).
    A frontal, upright face gives the identity, so its angles are (0, 0, 0).
    """
    ex = sum(face[..., j, :] - face[..., i, :] for i, j in EYE_AXIS)
    ey = sum(face[..., i, :] - face[..., j, :] for i, j in UP_AXIS)
    ex = ex / np.linalg.norm(ex, axis=-1, keepdims=True)
    ey = ey - (ey * ex).sum(-1, keepdims=True) * ex
    ey = ey / np.linalg.norm(ey, axis=-1, keepdims=True)
    ez = np.cross(ex, ey)
    return np.stack([ex, ey, ez], axis=-1)
