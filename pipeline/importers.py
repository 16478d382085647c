"""``driver-pipeline import FORMAT SOURCE``: a public data set's own annotations -> ``labels.csv``.

Each importer reads a data set where it lies (``SOURCE`` becomes ``data.raw_dir``) and returns
rows in the data set's OWN labels; ``labels.csv`` keeps those, and ``data.label_map`` in
params.yaml turns them into ``data.classes`` (pipeline/contracts/labels.py), so regrouping classes
later is a params change, not a new import. The written file is then checked by the labels
contract itself (videos present, inside the folder, no overlapping segments), exactly as
the frames stage will read it. Nothing found is dropped in silence: files an importer cannot
label are listed with the reason.

Formats (README "Importing public data sets"):

* ``dmd``: the Driver Monitoring Dataset (Vicomtech). Per recording a distraction annotation
  ``<group>_<subject>_<session>_<date>_rgb_ann_distraction.json`` (OpenLABEL, or VCD 4 with a
  ``vcd`` root): ``actions`` of type ``driver_actions/<label>`` with ``frame_intervals``
  (inclusive frame numbers of the face camera). The video is the face camera's
  (``metadata.streams.face_camera.uri``, else ``<stem>_rgb_face.mp4`` beside the JSON); its frame
  rate converts frames to seconds. Subject: ``<group>_<subject>``.
* ``uta-rldd``: the UTA Real-Life Drowsiness Dataset: ``<fold>/<participant>/<level>.<ext>`` with
  level 0 (alert), 5 (low vigilant), 10 (drowsy); one label per whole video. Subject: the participant.
* ``yawdd``: YawDD: mirror-camera videos named ``<n>-<Female|Male><glasses>-<Normal|Talking|Yawning>``;
  one label per whole video. Subject: ``<gender><n>``. The dash-camera videos carry no label in their
  names and are listed as not imported.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.core.errors import LabelsError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}


@dataclass(frozen=True)
class Row:
    video: str  # relative to the data set's root, POSIX
    subject: str
    label: str  # the data set's own label
    start_s: float | None = None  # None: the whole video
    end_s: float | None = None
    origin: str = ""  # where it came from (file, action), for error messages


@dataclass
class Imported:
    rows: list[Row]
    label_map: dict[str, str]  # own label -> class ("" drops it)
    class_order: tuple[str, ...]  # preferred order of the classes (the quiet one first)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was not imported)
    notes: list[str] = field(default_factory=list)
    task: str = "distraction"  # params data.task (README "Tasks")


# --- DMD ----------------------------------------------------------------------------------------
DMD_MAP = {
    "safe_drive": "normal",
    "standstill_or_waiting": "normal",
    "change_gear": "normal",
    "texting_right": "text",
    "texting_left": "text",
    "phonecall_right": "phonecall",
    "phonecall_left": "phonecall",
    "drinking": "drinking",
    "radio": "radio",
    "reach_side": "reach",
    "reach_backseat": "reach",
    "hair_and_makeup": "hair_and_makeup",
    "talking_to_passenger": "talking_to_passenger",
    "unclassified": "",  # DMD's own "could not tell": not trained on
}
DMD_ORDER = ("normal", "phonecall", "text", "drinking", "radio", "reach", "hair_and_makeup", "talking_to_passenger")
DMD_LEVEL = "driver_actions/"


def _video_fps(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise LabelsError(f"{path}: cannot read its frame rate (not a readable video?); it turns frames into seconds")
    return fps


def _dmd_root(doc: Any, path: Path) -> dict:
    if isinstance(doc, dict):
        for key in ("openlabel", "vcd"):
            if isinstance(doc.get(key), dict):
                return doc[key]
    raise LabelsError(f"{path}: not an OpenLABEL/VCD annotation (no 'openlabel' or 'vcd' object at the top)")


def dmd(source: Path, fps_of: Callable[[Path], float] = _video_fps) -> Imported:
    files = sorted(source.rglob("*_ann_distraction.json"))
    if not files:
        raise LabelsError(
            f"no DMD distraction annotations (*_ann_distraction.json) under {source}; give the folder that holds "
            "the DMD recordings (e.g. dmd/) with their JSON files beside the videos"
        )
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        rel_json = path.relative_to(source).as_posix()
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LabelsError(f"{path}: cannot read as JSON ({exc})") from exc
        root = _dmd_root(doc, path)
        stem = path.name[: -len("_ann_distraction.json")]
        uri = root.get("metadata", {}).get("streams", {}).get("face_camera", {}).get("uri", "")
        candidates = [path.parent / PurePosixPath(str(uri).replace("\\", "/")).name] if uri else []
        candidates += [path.parent / f"{stem}_face.mp4", path.parent / f"{stem.removesuffix('_rgb')}_rgb_face.mp4"]
        video = next((c for c in candidates if c.is_file()), None)
        if video is None:
            raise LabelsError(
                f"{path}: its face-camera video is missing: looked for "
                f"{sorted({c.relative_to(source).as_posix() for c in candidates})}; put the video beside its annotation"
            )
        parts = stem.split("_")
        subject = "_".join(parts[:2]) if len(parts) >= 2 else stem
        fps = fps_of(video)
        spans: list[tuple[int, int, str, str]] = []
        actions = root.get("actions", {})
        if not isinstance(actions, dict):
            raise LabelsError(f"{path}: 'actions' must be an object of actions by id")
        for uid, action in actions.items():
            kind = str(action.get("type", ""))
            if not kind.startswith(DMD_LEVEL):
                continue  # gaze, hands, talking: other annotation levels
            label = kind[len(DMD_LEVEL) :]
            for fi in action.get("frame_intervals", []):
                try:
                    a, b = int(fi["frame_start"]), int(fi["frame_end"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise LabelsError(f"{path}: action {uid} ({kind}) has a malformed frame interval {fi}") from exc
                if b < a or a < 0:
                    raise LabelsError(f"{path}: action {uid} ({kind}) has frames {a}..{b}; the end is before the start")
                spans.append((a, b, label, f"{rel_json} action {uid} ({kind}) frames {a}-{b}"))
        if not spans:
            skipped.append((rel_json, f"no {DMD_LEVEL}* action annotated"))
            continue
        spans.sort()
        for (_, b0, _, o0), (a1, _, _, o1) in itertools.pairwise(spans):
            if a1 <= b0:
                raise LabelsError(f"overlapping intervals: {o0} and {o1}; one frame can carry one driver action")
        rel_video = video.relative_to(source).as_posix()
        for a, b, label, origin in spans:  # frame_end is inclusive: the segment ends one frame later
            rows.append(Row(rel_video, subject, label, round(a / fps, 6), round((b + 1) / fps, 6), origin))
    return Imported(rows, dict(DMD_MAP), DMD_ORDER, skipped)


# --- UTA-RLDD -----------------------------------------------------------------------------------
RLDD_LEVELS = {"0": "alert", "5": "low_vigilant", "10": "drowsy"}
RLDD_ORDER = ("alert", "low_vigilant", "drowsy")


def _videos(source: Path) -> list[Path]:
    return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def uta_rldd(source: Path) -> Imported:
    rows, skipped = [], []
    for p in _videos(source):
        rel = p.relative_to(source).as_posix()
        level = RLDD_LEVELS.get(p.stem.strip())
        if level is None:
            skipped.append((rel, "file name is not a level 0, 5 or 10"))
            continue
        rows.append(Row(rel, p.parent.name, level, origin=rel))
    if not rows:
        raise LabelsError(f"no UTA-RLDD videos under {source}: expected <fold>/<participant>/0|5|10.<mov|mp4|m4v|...>")
    notes = [
        "UTA-RLDD labels whole recordings of about 10 minutes each: drowsiness shows over minutes, so set the "
        'long windows and drowsiness features of README "Tasks" (windows.size, windows.pool, windows.features) '
        "before dvc repro"
    ]
    return Imported(rows, {v: v for v in RLDD_LEVELS.values()}, RLDD_ORDER, skipped, notes, task="drowsiness")


# --- YawDD --------------------------------------------------------------------------------------
YAWDD_NAME = re.compile(r"^(?P<n>\d+)-(?P<gender>female|male)(?P<look>[^-]*)-(?P<what>normal|talking|yawning)$", re.I)
YAWDD_MAP = {"normal": "normal", "talking": "talking", "yawning": "yawn"}
YAWDD_ORDER = ("normal", "talking", "yawn")


def yawdd(source: Path) -> Imported:
    rows, skipped = [], []
    for p in _videos(source):
        rel = p.relative_to(source).as_posix()
        m = YAWDD_NAME.match(p.stem.strip())
        if m is None:
            why = (
                "a dash-camera video: YawDD names carry no label for these"
                if p.stem.strip().isdigit()
                else "name is not <n>-<Female|Male><glasses>-<Normal|Talking|Yawning>"
            )
            skipped.append((rel, why))
            continue
        subject = f"{m['gender'].capitalize()}{int(m['n'])}"
        rows.append(Row(rel, subject, m["what"].lower(), origin=rel))
    if not rows:
        raise LabelsError(f"no YawDD mirror videos (<n>-<Female|Male>...-<Normal|Talking|Yawning>.avi) under {source}")
    return Imported(rows, dict(YAWDD_MAP), YAWDD_ORDER, skipped)


FORMATS: dict[str, Callable[[Path], Imported]] = {"dmd": dmd, "uta-rldd": uta_rldd, "yawdd": yawdd}


# --- writing and checking -----------------------------------------------------------------------
def classes_of(imp: Imported) -> tuple[str, ...]:
    """The classes the imported rows map to, in the data set's preferred order. A label outside the
    importer's map is no class: the labels contract then names its row as an unknown label."""
    present = {imp.label_map[r.label] for r in imp.rows if r.label in imp.label_map} - {""}
    ordered = [c for c in imp.class_order if c in present]
    return tuple(ordered + sorted(present - set(ordered)))


def labels_csv(rows: list[Row]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video", "subject", "label", "start_s", "end_s"])
    for r in rows:
        w.writerow([r.video, r.subject, r.label, "" if r.start_s is None else f"{r.start_s:g}", _end(r.end_s)])
    return buf.getvalue()


def _end(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def data_block(
    raw_dir: str,
    labels_file: str,
    classes: tuple[str, ...],
    label_map: dict[str, str],
    fmt: str,
    task: str = "distraction",
) -> str:
    """The ``data:`` section of params.yaml for an imported data set."""
    import yaml

    body = yaml.safe_dump(
        {
            "task": task,
            "raw_dir": raw_dir,
            "labels_file": labels_file,
            "classes": list(classes),
            "label_map": label_map,
        },
        sort_keys=False,
        default_flow_style=None,
        width=110,
    )
    lines = [
        "data:",
        f'  # written by `driver-pipeline import {fmt}` (README "Importing public data sets"): labels.csv keeps the',
        "  # data set's own labels; label_map turns them into classes ('' drops those rows). Edit it to regroup.",
    ]
    return "\n".join(lines + ["  " + ln for ln in body.rstrip("\n").splitlines()]) + "\n"


def replace_data_section(params_text: str, block: str) -> str:
    """``params_text`` with its top-level ``data:`` section replaced by ``block`` (comments elsewhere kept)."""
    lines = params_text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if re.match(r"^data\s*:", ln)), None)  # block or inline
    if start is None:
        return block + "\n" + params_text
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # the blank line(s) before the next section stay
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def run(fmt: str, source: Path, params_path: Path, labels_file: str = "labels.csv", force: bool = False) -> dict:
    """Import ``source`` as ``fmt``: write ``source/labels_file`` (checked) and params.yaml's ``data`` section."""
    from pipeline.contracts.labels import load_labels
    from pipeline.core.config import load_params, parse_params
    from pipeline.core.files import atomic_path

    if fmt not in FORMATS:
        raise LabelsError(f"unknown format '{fmt}'; known: {sorted(FORMATS)}")
    source = Path(source)
    if not source.is_dir():
        raise LabelsError(f"{source} is not a folder: give the data set's root folder")
    out = source / labels_file
    if out.exists() and not force:
        raise LabelsError(f"{out} exists; move it away or pass --force to overwrite it")
    imp = FORMATS[fmt](source)
    classes = classes_of(imp)
    if len(classes) < 2:
        raise LabelsError(f"{source}: the imported labels give only the class(es) {list(classes)}; need at least 2")
    used_map = {k: v for k, v in imp.label_map.items() if k in {r.label for r in imp.rows}}
    raw_dir = source.as_posix()
    block = data_block(raw_dir, labels_file, classes, used_map, fmt, imp.task)
    params_text = params_path.read_text() if params_path.exists() else ""
    new_params = replace_data_section(params_text, block)
    import yaml

    parse_params(yaml.safe_load(new_params) or {})  # the new params must be valid before anything is written
    text = labels_csv(imp.rows)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    try:
        entries = load_labels(source, labels_file, classes, label_map=used_map)  # the contract's own checks
    except LabelsError:
        out.unlink(missing_ok=True)
        raise
    with atomic_path(params_path) as tmp:
        tmp.write_text(new_params)
    load_params(params_path)
    counts = Counter(r.label for r in imp.rows)
    return {
        "format": fmt,
        "labels": str(out),
        "videos": len(entries),
        "subjects": len({e.subject for e in entries}),
        "rows": len(imp.rows),
        "labels_found": dict(sorted(counts.items())),
        "task": imp.task,
        "classes": list(classes),
        "label_map": used_map,
        "not_imported": [f"{p}: {why}" for p, why in imp.skipped],
        "notes": imp.notes,
        "params": str(params_path),
    }
