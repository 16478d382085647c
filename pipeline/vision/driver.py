"""Which of several faces is the driver: a small, documented tracking rule.

FaceMesh is asked for up to ``landmarks.max_faces`` faces per frame (passengers, a child in the
back, a face on a billboard). The driver is chosen per frame, consistently through a video:

1. only faces whose centre lies in the seat region (``landmarks.driver_region``: x0, y0, x1, y1
   as fractions of the upright frame; the whole frame by default) are candidates;
2. the candidate that continues the driver of the previous frames (centre within one face
   width of where the driver was last seen) is kept;
3. otherwise (first frame, or the driver was lost) the largest candidate (widest face) is the
   driver from now on;
4. no candidate: no driver in this frame (the frame has no face).

The rule never switches to another face while the driver is still found where they were, so
a face appearing or disappearing beside them does not make the features jump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _centre_and_width(face: np.ndarray) -> tuple[np.ndarray, float]:
    xy = face[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    return (lo + hi) / 2, float(hi[0] - lo[0])


@dataclass
class DriverPicker:
    """Pick the driver's face among one frame's faces (source pixels, (478, 3) each)."""

    width: int  # upright source frame size, for the seat region
    height: int
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    _last: tuple[np.ndarray, float] | None = field(default=None, init=False)

    def pick(self, faces: list[np.ndarray]) -> int | None:
        """Index of the driver's face in ``faces``, or None."""
        x0, y0, x1, y1 = self.region
        cands = []
        for i, f in enumerate(faces):
            c, w = _centre_and_width(f)
            if x0 * self.width <= c[0] <= x1 * self.width and y0 * self.height <= c[1] <= y1 * self.height:
                cands.append((i, c, w))
        if not cands:
            return None
        chosen = None
        if self._last is not None:
            pos, size = self._last
            d = [float(np.linalg.norm(c - pos)) for _, c, _ in cands]
            j = int(np.argmin(d))
            if d[j] <= size:
                chosen = cands[j]
        if chosen is None:
            chosen = max(cands, key=lambda x: x[2])
        self._last = (chosen[1], chosen[2])
        return chosen[0]
