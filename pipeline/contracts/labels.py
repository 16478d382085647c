"""The raw-data contract: ``<raw_dir>/labels.csv`` and the videos it names.

Columns: ``video,subject,label`` and optionally ``start_s,end_s`` (segment labels
inside a long recording; both empty means the whole clip). ``video`` is a path
relative to the raw folder and may not leave it. Every problem stops the run with
a :class:`LabelsError` naming the CSV row (1-based, header = row 1).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.core.errors import LabelsError

__all__ = ["LabelsError", "Segment", "VideoEntry", "load_labels", "video_id_for"]
log = logging.getLogger(__name__)
REQUIRED = ("video", "subject", "label")
OPTIONAL = ("start_s", "end_s")


@dataclass(frozen=True)
class Segment:
    label: str
    start_s: float  # inclusive
    end_s: float  # exclusive; math.inf for "to the end"


@dataclass(frozen=True)
class VideoEntry:
    video_id: str  # unique, filesystem-safe id derived from the relative path
    path: Path  # absolute path inside the raw folder
    rel: str  # path as written in labels.csv
    subject: str
    segments: tuple[Segment, ...]

    def label_at(self, t: float) -> str | None:
        """Label of time ``t`` (seconds), or None when no segment covers it."""
        for s in self.segments:
            if s.start_s <= t < s.end_s:
                return s.label
        return None


def video_id_for(rel: str) -> str:
    """``cars/a b.mp4`` -> ``cars__a_b``: unique per path, safe as a file name."""
    p = PurePosixPath(rel)
    stem = "__".join([*p.parent.parts, p.stem]) if p.parent.parts else p.stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)


def _row_err(path: Path, row: int, msg: str) -> LabelsError:
    return LabelsError(f"{path}, row {row}: {msg}")


def _field_counts(path: Path) -> None:
    """Every row must have as many fields as the header: pandas would otherwise take the first
    column as the index (a trailing comma on every row) and report a shifted column's value."""
    import csv

    with path.open(newline="") as fh:
        rows = csv.reader(fh, skipinitialspace=True)
        header = next(rows, [])
        for i, rec in enumerate(rows):
            if rec and len(rec) != len(header):
                hint = " (a trailing comma?)" if len(rec) == len(header) + 1 and rec[-1].strip() == "" else ""
                raise _row_err(
                    path, i + 2, f"{len(rec)} fields but the header has {len(header)} ({','.join(header)}){hint}"
                )


def load_labels(
    raw_dir: str | Path,
    labels_file: str,
    classes: tuple[str, ...],
    labelled: bool = True,
    label_map: dict[str, str] | None = None,
) -> list[VideoEntry]:
    """Read and validate the labels file; returns one entry per video, in file order.

    ``labelled=False`` (videos to score, not to train on): only ``video`` is required; a missing
    ``subject`` makes each video its own driver, a missing ``label`` leaves it without segments.
    ``label_map`` (params ``data.label_map``): a data set's own labels -> ``classes``; a label mapped
    to ``""`` drops its rows (counted in the log), a label not in it must be a class itself.
    """
    raw = Path(raw_dir).resolve()
    path = raw / labels_file
    if not path.exists():
        raise LabelsError(
            f"{path} not found. Put a labels.csv (video,subject,label[,start_s,end_s]) in "
            f"the raw folder, or run the `demo` stage to generate the demo set."
        )
    try:
        _field_counts(path)
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False)
    except LabelsError:
        raise
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise LabelsError(f"{path}: cannot parse as CSV: {exc}") from exc
    label_map = dict(label_map or {})
    for src, dst in label_map.items():
        if dst and dst not in classes:
            raise LabelsError(
                f"params data.label_map maps '{src}' to '{dst}', which is not one of data.classes {list(classes)}; "
                "add it there or map the label to an existing class ('' drops it)"
            )
    dropped: dict[str, int] = {}
    df.columns = [c.strip() for c in df.columns]
    required = REQUIRED if labelled else ("video",)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise LabelsError(
            f"{path}: missing column(s) {missing}; the header must be "
            f"video,subject,label[,start_s,end_s], found {list(df.columns)}"
        )
    unknown_cols = sorted(set(df.columns) - set(REQUIRED) - set(OPTIONAL))
    if unknown_cols:
        raise LabelsError(f"{path}: unknown column(s) {unknown_cols}; allowed: video,subject,label,start_s,end_s")
    if len(df) == 0:
        raise LabelsError(f"{path}: no rows")
    has_seg = "start_s" in df.columns or "end_s" in df.columns
    if has_seg and not ("start_s" in df.columns and "end_s" in df.columns):
        raise LabelsError(f"{path}: segment labels need both start_s and end_s columns")

    seen_rows: dict[tuple, int] = {}
    by_video: dict[str, dict] = {}
    ids: dict[str, str] = {}
    for i, rec in enumerate(df.to_dict("records")):
        row = i + 2
        rel = rec["video"].strip()
        subject = rec.get("subject", "").strip()
        label = rec.get("label", "").strip()
        if label in label_map:
            if not label_map[label]:
                dropped[label] = dropped.get(label, 0) + 1
                continue
            label = label_map[label]
        if not rel:
            raise _row_err(path, row, "empty video path")
        if not subject and labelled:
            raise _row_err(path, row, f"empty subject for video '{rel}'")
        if not subject:
            subject = video_id_for(PurePosixPath(rel.replace("\\", "/")).as_posix())
        if (label or labelled) and label not in classes:
            mapped = f" or a label of params data.label_map {sorted(label_map)}" if label_map else ""
            allowed = f"allowed: {list(classes)} (params data.classes){mapped}"
            raise _row_err(path, row, f"unknown label '{label}'; {allowed}")
        p = PurePosixPath(rel.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts:
            raise _row_err(path, row, f"video path '{rel}' leaves the raw folder {raw}; use a path relative to it")
        full = (raw / p).resolve()
        if not full.is_relative_to(raw):
            raise _row_err(path, row, f"video path '{rel}' resolves outside the raw folder {raw}")
        if not full.is_file():
            raise _row_err(path, row, f"video file '{rel}' not found in {raw}")
        start, end = 0.0, math.inf
        if has_seg:
            s_txt, e_txt = rec["start_s"].strip(), rec["end_s"].strip()
            if s_txt or e_txt:
                try:
                    start = float(s_txt) if s_txt else 0.0
                    end = float(e_txt) if e_txt else math.inf
                except ValueError as exc:
                    raise _row_err(path, row, f"start_s/end_s must be numbers, got '{s_txt}', '{e_txt}'") from exc
                if not (start >= 0 and end > start):
                    raise _row_err(path, row, f"segment must satisfy 0 <= start_s < end_s, got {start}..{end}")
        key = (p.as_posix(), subject, label, start, end)
        if key in seen_rows:
            raise _row_err(path, row, f"duplicate of row {seen_rows[key]}")
        seen_rows[key] = row
        vid = video_id_for(p.as_posix())
        if vid in ids and ids[vid] != p.as_posix():
            raise _row_err(path, row, f"'{rel}' and '{ids[vid]}' map to the same video id '{vid}'; rename one")
        ids[vid] = p.as_posix()
        entry = by_video.setdefault(p.as_posix(), {"vid": vid, "full": full, "subject": subject, "segs": []})
        if entry["subject"] != subject:
            raise _row_err(
                path, row, f"video '{rel}' is given subject '{subject}' here but '{entry['subject']}' earlier"
            )
        for prev_row, seg in entry["segs"]:
            if start < seg.end_s and seg.start_s < end:
                what = "a second label for the whole clip" if math.isinf(end) and start == 0 else "a segment"
                raise _row_err(path, row, f"{what} overlapping row {prev_row} ({seg.start_s}..{seg.end_s}) of '{rel}'")
        if label:
            entry["segs"].append((row, Segment(label, start, end)))

    if dropped:
        log.info(
            "%s: %d row(s) skipped, their labels mapped to '' by params data.label_map: %s",
            path.name,
            sum(dropped.values()),
            ", ".join(f"{k} ({v})" for k, v in sorted(dropped.items())),
        )
    if not by_video:
        raise LabelsError(f"{path}: no row left after params data.label_map dropped {sorted(dropped)}")
    return [
        VideoEntry(
            video_id=e["vid"],
            path=e["full"],
            rel=rel,
            subject=e["subject"],
            segments=tuple(sorted((s for _, s in e["segs"]), key=lambda s: s.start_s)),
        )
        for rel, e in by_video.items()
    ]
