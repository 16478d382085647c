"""``predict``: behaviour timelines, segments and alerts for recorded videos.

Every video goes through the training path (pipeline/vision: frame plan -> landmarks ->
features) with the settings stored in the model's card, then windows of the model's length at
its stride, the driver's baseline (pipeline/apply/calibration.py) and the model. Per video, in
``<out>/<video_id>/``: ``timeline.parquet`` + ``timeline.csv`` (one row per window position),
``segments.csv``, ``alerts.csv``, ``timeline.png``, ``landmarks.parquet`` (the measured
landmarks, the landmarks contract) and optionally ``annotated.mp4``; per run ``summary.md``,
``summary.html``, ``summary.json`` and ``quarantine.json``.

Timeline columns: ``video, subject, start_frame, end_frame, start_s, end_s, centre_s,
face_fraction, calibrating, p_<class>...`` (probabilities), ``unfamiliar_score`` (distance from
the model's training windows relative to its cut-off, pipeline/modeling/familiarity.py: above 1
is farther than 99 % of the training-like windows of unseen drivers), ``unfamiliar``, ``label``
(the most probable class; ``"unfamiliar"`` when the window is unlike anything the model was trained
on: no class and no alert then; ``""`` when the window had a face in fewer than
``windows.min_face_fraction`` of its frames or the driver was still calibrating: no decision),
``confidence`` and, when labels were given, ``truth`` (the labelled class at the window's centre).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.apply.calibration import calibration_end, calibration_rows, median_baseline
from pipeline.apply.events import AlertTracker, alert_table, segments
from pipeline.apply.model import AppliedModel
from pipeline.contracts.frames import Plan
from pipeline.contracts.labels import VideoEntry, load_labels, video_id_for
from pipeline.contracts.landmarks import iter_landmarks
from pipeline.contracts.windows import cut_windows
from pipeline.core.config import Params, resolve_workers
from pipeline.core.errors import DataError, machine_fault
from pipeline.core.files import atomic_path, write_json, write_table
from pipeline.core.parallel import dask_address, map_jobs
from pipeline.vision.framefeatures import video_features
from pipeline.vision.frameplan import plan_video
from pipeline.vision.landmarker import detect_video
from pipeline.vision.video import VideoError

log = logging.getLogger(__name__)

SHORT_BASELINE_S = 60.0  # a driver baseline from less video than this gets a warning
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp"}


@dataclass(frozen=True)
class Options:
    mode: str = "alert"  # operating mode: alert (precision first) or report (recall first)
    baseline: str = "subject"  # subject | calibrate | none (pipeline/apply/calibration.py)
    calibration_s: float = 20.0
    clear_s: float = 2.0
    quiet_class: str = ""  # "" = the model's first class
    thresholds: dict[str, float] | None = None  # per class; None = the model's for ``mode``
    annotate: bool = False
    workers: int = 0  # videos measured at once (0 = all cores; 1 = in this process, with a frame progress bar)
    unfamiliar: bool = True  # windows far from the training windows: "unfamiliar", no class, no alert


def collect(source: Path, classes: tuple[str, ...]) -> tuple[list[VideoEntry], list[str]]:
    """Videos to score from a video file, a folder (every video in it, recursively) or a
    labels-style CSV (``video`` required; ``subject``, ``label``, ``start_s``, ``end_s`` optional;
    paths relative to the CSV's folder, which they may not leave). Returns the entries and the
    files of a folder that are not videos (reported)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} not found: give a video file, a folder of videos or a CSV listing them")
    if source.is_file() and source.suffix.lower() == ".csv":
        return load_labels(source.parent, source.name, classes, labelled=False), []
    if source.is_file():
        files, root = [source.resolve()], source.resolve().parent
    else:
        root = source.resolve()
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    others = [p.relative_to(root).as_posix() for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
    if not videos:
        raise DataError(f"no video files in {source} (looked for {sorted(VIDEO_SUFFIXES)})")
    entries = []
    for p in videos:
        rel = p.relative_to(root).as_posix()
        vid = video_id_for(rel)
        entries.append(VideoEntry(video_id=vid, path=p, rel=rel, subject=vid, segments=()))
    return entries, others


@dataclass(frozen=True)
class MeasureJob:
    """One video for a worker: the model's input settings, never the model itself."""

    entry: VideoEntry
    params: Params
    window: int
    out_dir: Path
    frame_bar: bool = False  # a per-frame progress bar (only when videos are measured in this process)


def measure(job: MeasureJob) -> tuple[pd.DataFrame, dict, Plan]:
    """One video through frames -> landmarks -> features with the model's own settings.

    Returns the per-frame feature table, facts (frames, timing, warnings) and the frame plan;
    raises :class:`VideoError` with the reason when the video cannot be used (as the pipeline would)."""
    entry, p, out_dir = job.entry, job.params, job.out_dir
    plan, qc = plan_video(entry.path, p.frames, job.window, entry.segments)
    out_dir.mkdir(parents=True, exist_ok=True)
    lm_path = out_dir / "landmarks.parquet"
    disable = None if job.frame_bar else True
    with tqdm(total=plan.n, desc=entry.rel[-40:], unit="frame", disable=disable, leave=False) as bar:
        stats = detect_video(entry.path, plan, p.landmarks, lm_path, entry.rel, progress=lambda k: bar.update(1))
    frac = stats["face_frames"] / max(1, stats["usable_frames"])
    if frac < p.landmarks.min_face_fraction:
        raise VideoError(
            f"face found in only {stats['face_frames']} of {stats['usable_frames']} usable frames ({frac:.0%}); "
            f"the model's landmarks.min_face_fraction is {p.landmarks.min_face_fraction}"
        )
    feats = video_features(iter_landmarks(lm_path), p.features, plan.fps)
    facts = {
        "frames": plan.n,
        "seconds": round(plan.n / plan.fps, 2),
        "rotation": plan.rotation,
        "timing": plan.timing,
        "face_fraction": round(frac, 4),
        "multi_face_frames": stats["multi_face_frames"],
        "warnings": qc["warnings"],
    }
    return feats, facts, plan


def measure_video(job: MeasureJob) -> dict[str, Any]:
    """Worker entry: :func:`measure`, or the reason the video cannot be used (the others go on)."""
    e = job.entry
    try:
        feats, facts, plan = measure(job)
    except VideoError as exc:
        return {"video_id": e.video_id, "video": e.rel, "status": "quarantined", "reason": str(exc)}
    except Exception as exc:  # one broken video must not stop the others; the reason is kept
        if (fault := machine_fault(exc)) is not None:  # the machine's, not this video's: stop
            raise fault from exc
        reason = f"unexpected error: {type(exc).__name__}: {exc}"
        return {"video_id": e.video_id, "video": e.rel, "status": "quarantined", "reason": reason}
    return {"video_id": e.video_id, "status": "ok", "features": feats, "facts": facts, "plan": plan}


def feature_rows(feats: pd.DataFrame, model: AppliedModel) -> np.ndarray:
    """(n, F) float32 rows in the model's feature order (as the windows stage reads them)."""
    return np.array(feats[list(model.card.features)].to_numpy(np.float32), order="C")


def baselines(
    tables: dict[str, pd.DataFrame], subjects: dict[str, str], model: AppliedModel, o: Options
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per video: the baseline subtracted from its rows, and the frame where calibration ends
    (0: nothing to wait for)."""
    n_f = len(model.card.features)
    base: dict[str, np.ndarray] = {}
    ready: dict[str, int] = {}
    if not model.subject_baseline or o.baseline == "none":
        return {v: np.zeros(n_f, np.float32) for v in tables}, dict.fromkeys(tables, 0)
    fps = model.params.frames.fps
    if o.baseline == "calibrate":
        for v, t in tables.items():
            face = t["face_present"].to_numpy()
            base[v] = median_baseline(
                feature_rows(t, model)[calibration_rows(face, o.calibration_s, fps)], model.card.features
            )
            end = calibration_end(face, o.calibration_s, fps)
            ready[v] = end if end >= 0 else len(t)
        return base, ready
    # subject: all of the driver's frames, videos in id order, exactly as the windows stage takes them
    for s in sorted(set(subjects.values())):
        vids = sorted(v for v in tables if subjects[v] == s)
        b = median_baseline(np.concatenate([feature_rows(tables[v], model) for v in vids]), model.card.features)
        for v in vids:
            base[v], ready[v] = b, 0
    return base, ready


UNFAMILIAR = "unfamiliar"  # the label of a window unlike the model's training windows


def timeline(
    feats: pd.DataFrame,
    base: np.ndarray,
    ready: int,
    model: AppliedModel,
    entry: VideoEntry,
    labelled: bool,
    check_familiar: bool = True,
) -> pd.DataFrame:
    """One row per window position: times, face fraction, probabilities, decision."""
    size, stride = model.window, model.params.windows.stride
    x_all = feature_rows(feats, model) - base
    n = len(x_all)
    starts = np.arange(0, n - size + 1, stride) if n >= size else np.zeros(0, np.int64)
    x = cut_windows(x_all, starts, size, model.pool)
    prob = model.proba(x)
    rel, far = model.unfamiliar(x)
    if not check_familiar:
        far = np.zeros(len(x), bool)
    face = np.r_[0.0, np.cumsum(feats["face_present"].to_numpy(np.float64))]
    ends = starts + size - 1
    t = feats["t"].to_numpy()
    face_frac = (face[starts + size] - face[starts]) / size
    calibrating = ends < ready - 1
    decided = (face_frac >= model.params.windows.min_face_fraction) & ~calibrating
    classes = model.classes
    best = prob.argmax(1) if len(prob) else np.zeros(0, np.int64)
    df = pd.DataFrame(
        {
            "video": entry.video_id,
            "subject": entry.subject,
            "start_frame": feats["frame"].to_numpy()[starts].astype(np.int32),
            "end_frame": feats["frame"].to_numpy()[ends].astype(np.int32),
            "start_s": t[starts],
            "end_s": t[ends] + 1.0 / model.params.frames.fps,
            "face_fraction": face_frac.round(4),
            "calibrating": calibrating,
        }
    )
    df["centre_s"] = (df["start_s"] + df["end_s"]) / 2
    for i, c in enumerate(classes):
        df[f"p_{c}"] = prob[:, i] if len(prob) else []
    df["unfamiliar_score"] = rel.round(4)
    df["unfamiliar"] = decided & far
    df["label"] = np.where(decided, np.where(far, UNFAMILIAR, np.asarray(classes, dtype=object)[best]), "")
    df["confidence"] = prob.max(1) if len(prob) else []
    if labelled:
        df["truth"] = [entry.label_at(c) or "" for c in df["centre_s"]]
    return df


def alerts_for(tl: pd.DataFrame, model: AppliedModel, thresholds: dict[str, float], o: Options) -> list[dict]:
    """Alert/clear events over a timeline; decisions at each window's end (what a live monitor knows then)."""
    quiet = o.quiet_class or model.classes[0]
    tracker = AlertTracker(thresholds, quiet, o.clear_s, o.mode)
    events: list[dict] = []
    cols = [f"p_{c}" for c in model.classes]
    live = ~tl["label"].isin(["", UNFAMILIAR])  # an unfamiliar window decides nothing
    for end, ok, row in zip(tl["end_s"], live, tl[cols].to_numpy(), strict=True):
        events += tracker.update(float(end), dict(zip(model.classes, row, strict=True)), live=bool(ok))
    if len(tl):
        events += tracker.finish(float(tl["end_s"].iloc[-1]))
    return events


def run(source: Path, model: AppliedModel, out: Path, o: Options) -> dict[str, Any]:
    """Score every video of ``source``; write the outputs under ``out``; return the run summary."""
    entries, others = collect(source, model.card.classes)
    labelled = any(e.segments for e in entries)
    thresholds = o.thresholds or model.thresholds[o.mode]
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "predict: %d video(s) with model '%s' (%s), %s mode, baseline: %s",
        len(entries),
        model.name,
        model.source,
        o.mode,
        o.baseline if model.subject_baseline else "none (the model was trained without one)",
    )
    for f in others:
        log.warning("ignored %s: not a video file", f)
    tables: dict[str, pd.DataFrame] = {}
    facts: dict[str, dict] = {}
    plans: dict[str, Plan] = {}
    quarantined = []
    workers = min(resolve_workers(o.workers), len(entries))
    jobs = [MeasureJob(e, model.params, model.window, out / e.video_id, workers == 1) for e in entries]
    by_id = {e.video_id: e for e in entries}
    # per video: frames, landmarks, features (local processes, or the Dask cluster the stages use)
    for res in map_jobs(measure_video, jobs, workers, "predict", dask_address("")):
        vid = res["video_id"]
        if res["status"] != "ok":
            quarantined.append({k: res[k] for k in ("video_id", "video", "reason")})
            log.warning("quarantined %s: %s", res["video"], res["reason"])
            continue
        tables[vid], facts[vid], plans[vid] = res["features"], res["facts"], res["plan"]
        for w in facts[vid]["warnings"]:
            log.warning("%s: %s", by_id[vid].rel, w)
    base, ready = baselines(tables, {v: by_id[v].subject for v in tables}, model, o)
    driver_warnings: list[str] = []
    if model.subject_baseline and o.baseline == "subject":
        short = {}
        for s in sorted({by_id[v].subject for v in tables}):
            seconds = sum(len(t) for v, t in tables.items() if by_id[v].subject == s) / model.params.frames.fps
            if seconds < SHORT_BASELINE_S:
                short[s] = seconds
        if short:  # one warning for the run, not one per clip
            names = ", ".join(f"'{s}' ({sec:.0f} s)" for s, sec in list(short.items())[:5])
            more = f" and {len(short) - 5} more" if len(short) > 5 else ""
            msg = (
                f"{len(short)} driver(s) have a baseline from less than {SHORT_BASELINE_S:.0f} s of video: "
                f"{names}{more}; if that shows one behaviour throughout it reads as that driver's normal. Give "
                "more of their driving (a CSV with a subject column) or use --baseline calibrate on a recording "
                "that starts with normal driving"
            )
            log.warning(msg)
            driver_warnings.append(msg)
    if not model.knows_familiarity:
        log.warning(
            "model '%s' was trained before the unfamiliar-input score existed: every window gets a class; "
            "retrain it (dvc repro train@%s) to have unfamiliar video reported as such",
            model.name,
            model.card.model,
        )
    results = {}
    for vid, feats in tables.items():
        e = by_id[vid]
        if ready[vid] >= len(feats):
            log.warning(
                "%s: fewer than %g s with a face: the driver is calibrating all along, no decision is made "
                "(use --baseline subject, or a longer recording)",
                e.rel,
                o.calibration_s,
            )
        tl = timeline(feats, base[vid], ready[vid], model, e, labelled, o.unfamiliar)
        events = alerts_for(tl, model, thresholds, o)
        results[vid] = write_video(out / vid, tl, events, model, e, plans[vid], thresholds, o, facts[vid])
        if results[vid]["unfamiliar_share"] > 0.5:
            log.warning(
                "%s: %.0f%% of its windows are unlike anything model '%s' was trained on (reported as "
                "'unfamiliar', no alerts there): another camera, person or behaviour than its training video?",
                e.rel,
                100 * results[vid]["unfamiliar_share"],
                model.name,
            )
    write_json(out / "quarantine.json", {"quarantined": quarantined, "ignored_files": others})
    summary = {
        "model": model.name,
        "model_source": model.source,
        "mode": o.mode,
        "baseline": o.baseline if model.subject_baseline else "none",
        "calibration_s": o.calibration_s if o.baseline == "calibrate" else None,
        "thresholds": thresholds,
        "never_alert": sorted(set(model.unreachable.get(o.mode, [])) | {o.quiet_class or model.classes[0]}),
        "unfamiliar": unfamiliar_summary(model, results, o.unfamiliar),
        "driver_warnings": driver_warnings,
        "videos": results,
        "quarantined": quarantined,
        "ignored_files": others,
    }
    write_json(out / "summary.json", summary)
    from pipeline.apply.summary import write_summary

    write_summary(out, summary, model.classes)
    return {
        "videos": len(entries),
        "scored": len(results),
        "quarantined": len(quarantined),
        "alerts": sum(r["alerts"] for r in results.values()),
        "unfamiliar_share": summary["unfamiliar"]["share"],
        "out": str(out),
    }


def unfamiliar_summary(model: AppliedModel, results: dict[str, dict], checked: bool) -> dict[str, Any]:
    """How much of the run was unlike the model's training windows (decided windows only)."""
    n = sum(r["unfamiliar_windows"] for r in results.values())
    total = sum(r["decided"] for r in results.values())
    card = model.card.familiarity
    return {
        "checked": bool(checked and card),
        "windows": n,
        "share": round(n / total, 4) if total else 0.0,
        "cutoff": card.get("cutoff"),
        "training_windows_flagged": card.get("oof_flagged"),  # out of fold, at calibration
    }


def write_video(
    folder: Path,
    tl: pd.DataFrame,
    events: list[dict],
    model: AppliedModel,
    e: VideoEntry,
    plan: Plan,
    thresholds: dict[str, float],
    o: Options,
    facts: dict,
) -> dict:
    """The per-video files; returns the video's line of the run summary."""
    import pyarrow as pa

    stride_s = model.params.windows.stride / model.params.frames.fps
    seg = segments(tl["centre_s"].to_numpy(), stride_s, tl["label"].to_numpy(), tl["confidence"].to_numpy())
    seg["label"] = seg["label"].replace("", "(no decision)")
    alerts = alert_table(events)
    table = pa.Table.from_pandas(tl, preserve_index=False)
    meta = {"model": model.name, "mode": o.mode, "window": model.window, "stride": model.params.windows.stride}
    write_table(table.replace_schema_metadata({b"timeline": json.dumps(meta).encode()}), folder / "timeline.parquet")
    for name, df in (("timeline.csv", tl), ("segments.csv", seg), ("alerts.csv", alerts)):
        with atomic_path(folder / name) as tmp:
            df.round(5).to_csv(tmp, index=False)
    from pipeline.apply.summary import timeline_figure

    with atomic_path(folder / "timeline.png", keep_suffix=True) as tmp:
        timeline_figure(tl, seg, alerts, model.classes, thresholds, f"{e.rel} ({model.name}, {o.mode} mode)", tmp)
    if o.annotate:
        from pipeline.apply.draw import annotate_video

        annotate_video(e, model, plan, tl, folder / "landmarks.parquet", folder / "annotated.mp4")
    decided = tl[tl["label"] != ""]
    step = model.params.windows.stride / model.params.frames.fps
    n_unfamiliar = int((decided["label"] == UNFAMILIAR).sum())
    return {
        "video": e.rel,
        "subject": e.subject,
        **facts,
        "windows": len(tl),
        "decided": len(decided),
        "seconds_by_class": {c: round(float((decided["label"] == c).sum() * step), 1) for c in model.classes},
        "unfamiliar_windows": n_unfamiliar,
        "unfamiliar_share": round(n_unfamiliar / len(decided), 4) if len(decided) else 0.0,
        "segments": len(seg),
        "alerts": len(alerts),
        "alerts_by_class": {c: int((alerts["class"] == c).sum()) for c in model.classes},
    }
