"""`features` stage: named per-frame features from landmarks, in one Parquet file.

Computes each video's features with pipeline/vision/framefeatures.py (the geometry, the
missing-detection policy, drowsiness features and smoothing are documented there), adds the
video, subject and per-frame label, and merges the quarantine lists of frames and landmarks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.contracts.features import write_features
from pipeline.contracts.labels import load_labels
from pipeline.contracts.landmarks import iter_landmarks
from pipeline.contracts.quarantine import write_quarantine
from pipeline.core.config import Params, load_params
from pipeline.core.errors import DataError
from pipeline.core.files import read_json
from pipeline.core.runtime import FramesDir, LandmarksDir, ParamsOpt, QuarantinePath, run_stage
from pipeline.vision.framefeatures import video_features

log = logging.getLogger(__name__)


def run(params: Params, landmarks_dir: Path, frames_dir: Path, out_path: Path, quarantine_path: Path) -> dict:
    """Every landmark file -> ``features.parquet``; merges the quarantine lists."""
    d = params.data
    entries = {e.video_id: e for e in load_labels(d.raw_dir, d.labels_file, d.classes, label_map=d.label_map)}
    frames_manifest = read_json(Path(frames_dir) / "manifest.json")
    lm_manifest = read_json(Path(landmarks_dir) / "manifest.json")
    parts = []
    for vid, info in tqdm(sorted(lm_manifest["videos"].items()), desc="features", unit="video", disable=None):
        if info["status"] != "ok":
            continue
        e = entries[vid]
        lm = iter_landmarks(Path(landmarks_dir) / f"{vid}.parquet")
        df = video_features(lm, params.features, params.frames.fps)
        df.insert(0, "label", [e.label_at(x) for x in df["t"]])
        df.insert(0, "subject", e.subject)
        df.insert(0, "video", vid)
        parts.append(df)
    if not parts:
        raise DataError(
            f"no video survived frames and landmarks ({len(lm_manifest['videos'])} reached landmarks); "
            f"the reasons are in {frames_dir}/manifest.json and {landmarks_dir}/manifest.json. "
            "Check data.raw_dir and labels.csv, or lower landmarks.min_face_fraction"
        )
    table = pd.concat(parts, ignore_index=True)
    # ids as categoricals: dictionary-encoded in Parquet (small) and free to group by downstream
    table["video"] = pd.Categorical(table["video"], categories=sorted(table["video"].unique()))
    table["subject"] = pd.Categorical(table["subject"], categories=sorted(table["subject"].unique()))
    table["label"] = pd.Categorical(table["label"], categories=list(params.data.classes))
    write_features(table, out_path)
    quarantined = [
        v for m in (frames_manifest, lm_manifest) for v in m["videos"].values() if v["status"] == "quarantined"
    ]
    warnings = [
        {"video_id": vid, "video": v["video"], "stage": "frames", "warning": w}
        for vid, v in sorted(frames_manifest["videos"].items())
        for w in v.get("warnings", [])
    ]
    write_quarantine(quarantine_path, quarantined, frames_manifest.get("ignored_files", []), warnings)
    return {
        "videos": len(parts),
        "frames": len(table),
        "quarantined": len(quarantined),
        "face_rate": float(table["face_present"].mean()),
    }


def main(
    params: ParamsOpt = Path("params.yaml"),
    landmarks_dir: LandmarksDir = Path("data/landmarks"),
    frames_dir: FramesDir = Path("data/frames"),
    out: Path = Path("data/features.parquet"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """Per-frame features from landmarks into one Parquet file."""
    run_stage(lambda: run(load_params(params), landmarks_dir, frames_dir, out, quarantine))
