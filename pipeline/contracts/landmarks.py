"""The landmarks contract: ``data/landmarks/<video_id>.parquet`` + ``manifest.json``.

One row per output frame, coordinates in SOURCE pixels (x, y, z; z on the x scale):
``frame, t, face_present, face`` (fixed list of 478*3 float32, all NaN when no face),
``hand_count, hand0, hand1`` (21*3 float32, all NaN when absent), ``hand0_side,
hand1_side`` (MediaPipe's handedness label), ``hand0_score, hand1_score``, ``face_count``
(faces FaceMesh found; ``face`` is the driver's, picked by pipeline/vision/driver.py) and
``stale`` (the frames stage marked the frame as held over a gap in the recording: nothing was
measured). Schema metadata ``landmarks``: letterbox, video, fps, space, hands, hands_every,
max_faces, driver_region. Written in row groups of
:data:`CHUNK` frames while the video streams, so memory does not grow with its length.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.files import atomic_path
from pipeline.vision.geometry import N_FACE, N_HAND

CHUNK = 256  # frames per Parquet row group
Hand = tuple[np.ndarray, str, float]  # (21, 3) points, side label, score


def schema(meta: dict[str, Any] | None = None):
    import pyarrow as pa

    face = pa.list_(pa.float32(), N_FACE * 3)
    hand = pa.list_(pa.float32(), N_HAND * 3)
    sch = pa.schema(
        [
            ("frame", pa.int32()),
            ("t", pa.float64()),
            ("face_present", pa.bool_()),
            ("face", face),
            ("hand_count", pa.int8()),
            ("hand0", hand),
            ("hand1", hand),
            ("hand0_side", pa.string()),
            ("hand1_side", pa.string()),
            ("hand0_score", pa.float32()),
            ("hand1_score", pa.float32()),
            ("face_count", pa.int8()),
            ("stale", pa.bool_()),
        ]
    )
    return sch.with_metadata({b"landmarks": json.dumps(meta, sort_keys=True).encode()}) if meta else sch


Row = tuple[int, float, np.ndarray | None, list[Hand], int, bool]


def _arrays(rows: list[Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list, np.ndarray]:
    """Per-frame results as the file stores them: float32 face (n, 478*3) and hands (2, n, 21*3),
    NaN where absent, with their absence masks, sides and scores."""
    n = len(rows)
    face = np.full((n, N_FACE * 3), np.nan, np.float32)
    fmask = np.ones(n, bool)
    hand = np.full((2, n, N_HAND * 3), np.nan, np.float32)
    hmask = np.ones((2, n), bool)
    side: list[list[str | None]] = [[None] * n, [None] * n]
    score = np.zeros((2, n), np.float32)
    for r, (_, _, f, hs, _, _) in enumerate(rows):
        if f is not None:
            face[r] = f.ravel()
            fmask[r] = False
        for j, (pts, lab, sc) in enumerate(hs[:2]):
            hand[j, r] = pts.ravel()
            hmask[j, r] = False
            side[j][r] = lab
            score[j, r] = sc
    return face, fmask, hand, hmask, side, score


def rows_to_batch(rows: list[Row]) -> dict[str, np.ndarray]:
    """Per-frame results held in memory (the live monitor's ring buffer) as the batch
    :func:`iter_landmarks` would read back from a file of them: the same float32 values."""
    face, fmask, hand, _, _, _ = _arrays(rows)
    hands = hand.reshape(2, len(rows), N_HAND, 3).transpose(1, 0, 2, 3)
    return {
        "frame": np.array([r[0] for r in rows], np.int32),
        "t": np.array([r[1] for r in rows], np.float64),
        "face": face.reshape(-1, N_FACE, 3),
        "face_present": ~fmask,
        "stale": np.array([r[5] for r in rows], bool),
        "hands": hands,
        "hand_present": np.isfinite(hands[:, :, 0, 0]),
    }


def _table(rows: list[Row], sch):
    """One row group from buffered per-frame results."""
    import pyarrow as pa

    face, fmask, hand, hmask, side, score = _arrays(rows)

    def fixed(values: np.ndarray, size: int):
        # never null (Arrow's Parquet reader rejects null fixed-size lists): NaN + a presence flag
        return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), size)

    cols = [
        pa.array([r[0] for r in rows], pa.int32()),
        pa.array([r[1] for r in rows], pa.float64()),
        pa.array(~fmask),
        fixed(face, N_FACE * 3),
        pa.array([len(r[3]) for r in rows], pa.int8()),
        fixed(hand[0], N_HAND * 3),
        fixed(hand[1], N_HAND * 3),
        pa.array(side[0], pa.string()),
        pa.array(side[1], pa.string()),
        pa.array(score[0], pa.float32(), mask=hmask[0]),
        pa.array(score[1], pa.float32(), mask=hmask[1]),
        pa.array([r[4] for r in rows], pa.int8()),
        pa.array([r[5] for r in rows], pa.bool_()),
    ]
    return pa.Table.from_arrays(cols, schema=sch)


class LandmarksWriter:
    """Streaming writer of one landmark file: ``add`` per frame; the file appears under its
    real name only when the ``with`` block ends without an exception."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta
        self.rows: list[Row] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> LandmarksWriter:
        import pyarrow.parquet as pq

        try:  # ``__exit__`` does not run when ``__enter__`` raises (a stop signal can land here)
            tmp = self._stack.enter_context(atomic_path(self.path))
            self.schema = schema(self.meta)
            self.writer = pq.ParquetWriter(tmp, self.schema, compression="zstd")
            self._stack.callback(self.writer.close)  # closed before the rename (LIFO)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)  # not close(): that would rename
            raise
        return self

    def add(
        self, frame: int, t: float, face: np.ndarray | None, hands: list[Hand], faces: int = 1, stale: bool = False
    ) -> None:
        """One frame: the driver's face (or None), the hands, how many faces were seen, staleness."""
        self.rows.append((frame, t, face, hands, faces, stale))
        if len(self.rows) == CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.writer.write_table(_table(self.rows, self.schema))
            self.rows = []

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self._flush()  # the last rows: a full disk strikes here too
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)  # the temp file goes, nothing renamed
                raise
        self._stack.__exit__(exc_type, exc, tb)


def iter_landmarks(path: Path, batch_size: int = CHUNK) -> Iterator[dict[str, np.ndarray]]:
    """Stream a landmark file in batches: face (n,478,3) and hands (n,2,21,3), NaN where absent."""
    import pyarrow.parquet as pq

    cols = ["frame", "t", "face_present", "face", "hand0", "hand1", "stale"]
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=cols):
        n = batch.num_rows

        def fixed(col: str, shape: tuple[int, ...], n: int = n, batch=batch) -> np.ndarray:
            arr = batch.column(col)
            return arr.values.to_numpy(zero_copy_only=False)[arr.offset * int(np.prod(shape)) :].reshape(-1, *shape)[:n]

        hands = np.stack([fixed("hand0", (N_HAND, 3)), fixed("hand1", (N_HAND, 3))], axis=1)
        yield {
            "frame": batch.column("frame").to_numpy(),
            "t": batch.column("t").to_numpy(),
            "face": fixed("face", (N_FACE, 3)),
            "face_present": batch.column("face_present").to_numpy(zero_copy_only=False),
            "stale": batch.column("stale").to_numpy(zero_copy_only=False),
            "hands": hands,
            "hand_present": np.isfinite(hands[:, :, 0, 0]),
        }


def read_landmarks(path: Path) -> dict[str, np.ndarray]:
    """A whole landmark file as arrays (see :func:`iter_landmarks`); for tests and notebooks."""
    parts = list(iter_landmarks(path))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
