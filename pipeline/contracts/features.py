"""The features contract: ``data/features.parquet``, one row per frame of every usable video.

Columns: ``video, subject, label`` (categoricals; label NaN where no segment covers the
frame), ``frame, t``, every feature of :data:`REGISTRY` (float32, in registry order),
``face_filled`` (1 where a short face gap was interpolated) and ``stale`` (1 where the
recording had no frame: the frames stage held an old one, nothing was measured). The registry (names, units,
expected ranges) is stored in the schema metadata ``features``; the validate stage checks
the ranges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.files import write_parquet


@dataclass(frozen=True)
class Feature:
    name: str
    unit: str
    lo: float  # expected range, checked by the validate stage
    hi: float
    description: str
    face_derived: bool = True  # gaps in face detection are filled / flagged for these


REGISTRY: dict[str, Feature] = {
    f.name: f
    for f in [
        Feature("ear_left", "ratio", 0.0, 0.8, "eye aspect ratio, subject's left eye (6-point, 3D)"),
        Feature("ear_right", "ratio", 0.0, 0.8, "eye aspect ratio, subject's right eye (6-point, 3D)"),
        Feature("mar", "ratio", 0.0, 2.0, "mouth aspect ratio: inner-lip opening over mouth width"),
        Feature("yaw", "deg", -90.0, 90.0, "head yaw, > 0 when the nose turns to image right"),
        Feature("pitch", "deg", -90.0, 90.0, "head pitch, > 0 when the nose tilts up"),
        Feature("roll", "deg", -180.0, 180.0, "head roll, > 0 when the head tilts clockwise in the image"),
        Feature(
            "gaze_x", "eye widths", -1.0, 1.0, "iris offset from the eye centre along the eye axis (> 0 image right)"
        ),
        Feature("gaze_y", "eye widths", -1.0, 1.0, "iris offset across the eye axis (> 0 image down)"),
        Feature("face_present", "flag", 0.0, 1.0, "1 when FaceMesh found a face in this frame", False),
        Feature("hand_present", "flag", 0.0, 1.0, "1 when MediaPipe Hands found at least one hand", False),
        Feature(
            "hand_face_dist",
            "face widths",
            0.0,
            50.0,
            "nearest hand point to the nose tip, over the outer-eye-corner distance; NaN without a hand",
            False,
        ),
        Feature(
            "hand_ear_dist",
            "face widths",
            0.0,
            50.0,
            "nearest hand point to either ear point, over the outer-eye-corner distance; NaN without a hand",
            False,
        ),
        # drowsiness (pipeline/vision/drowsiness.py): over the trailing features.drowsy_window_s
        Feature("perclos", "share", 0.0, 1.0, "PERCLOS P80: share of face frames with the eyes >= 80% closed", False),
        Feature("blink_rate", "1/min", 0.0, 300.0, "blinks per minute", False),
        Feature("blink_duration", "s", 0.0, 2.0, "mean blink duration (eye >= blink_closure closed)", False),
        Feature("blink_amplitude", "share", 0.0, 1.0, "mean peak eye closure of the blinks", False),
        Feature("blink_close_vel", "1/s", 0.0, 100.0, "mean closing velocity of the blinks (closure per s)", False),
        Feature("blink_open_vel", "1/s", 0.0, 100.0, "mean opening velocity of the blinks (closure per s)", False),
        Feature("yawning", "flag", 0.0, 1.0, "1 while a yawn (mar >= yawn_mar for >= yawn_min_s) goes on", False),
        Feature("yawn_s", "s", 0.0, 60.0, "seconds into the current yawn (0 when not yawning)", False),
        Feature("yawn_rate", "1/min", 0.0, 60.0, "yawns begun per minute", False),
    ]
}
DROWSINESS = ("perclos", "blink_rate", "blink_duration", "blink_amplitude", "blink_close_vel", "blink_open_vel")
DROWSINESS += ("yawning", "yawn_s", "yawn_rate")
ID_COLUMNS = ("video", "subject", "label", "frame", "t")


def registry_json() -> str:
    return json.dumps([asdict(f) for f in REGISTRY.values()], sort_keys=True)


def write_features(table: pd.DataFrame, path: Path) -> None:
    """Write the features table atomically with the registry in its metadata."""
    write_parquet(table, path, metadata={"features": registry_json()})


def read_features(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The features table (or just ``columns``, those of them it has)."""
    if columns is not None:
        import pyarrow.parquet as pq

        have = set(pq.read_schema(path).names)
        columns = [c for c in columns if c in have]
    return pd.read_parquet(path, columns=columns)


def iter_features(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """The features table in batches of ``rows`` rows (the last one shorter; memory for one batch),
    however the file's row groups are cut (one per video, say)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    held: list = []
    count, given = 0, 0
    with pq.ParquetFile(path) as pf:
        for b in pf.iter_batches(batch_size=rows):  # never longer than a row group
            held.append(b)
            count += len(b)
            while count >= rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, rows).to_pandas()
                rest = table.slice(rows)
                held, count, given = rest.to_batches(), len(rest), given + 1
        if count or not given:  # the rest, or an empty table's columns
            yield (pa.Table.from_batches(held, pf.schema_arrow)).to_pandas()
