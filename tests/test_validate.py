"""The Great Expectations gate bites: each injected contract breach fails with the right message."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.contracts import windows as WC
from pipeline.contracts.features import REGISTRY
from pipeline.core.config import parse_params
from pipeline.core.errors import ValidationFailed
from pipeline.core.files import write_table
from pipeline.stages import validate as V
from pipeline.stages import windows as W
from tests.conftest import ROOT
from tests.test_windows import CLASSES, fake_features

FEATS = ("ear_left", "mar", "yaw", "face_present")


@pytest.fixture
def clean(tmp_path):
    """A clean features table (every registry column) and its windows on disk."""
    df = fake_features(n_subjects=6, frames=30)
    rng = np.random.default_rng(1)
    for name, f in REGISTRY.items():
        if name not in df:
            df[name] = np.float32(0.0) if f.unit == "flag" else rng.uniform(0.1, 0.3, len(df)).astype(np.float32)
    df["hand_face_dist"] = np.nan  # no hands, as in the demo: allowed
    df["hand_ear_dist"] = np.nan
    df["face_filled"] = np.int8(0)
    df["stale"] = np.int8(0)
    params = parse_params({"windows": {"size": 10, "stride": 5, "features": list(FEATS)}})
    w, meta = W.build(df, params.windows, CLASSES)
    WC.write_windows(w, meta, tmp_path / "windows")
    return params, df, tmp_path / "windows"


def failures(params, df, wdir):
    outcomes, _ = V.validate(params, df, wdir)
    return [o for o in outcomes if not o.success and o.severity == "critical"]


def rewrite(wdir, edit):
    x, _, index, _ = WC.read_windows(wdir)
    x, index = edit(x, index)
    write_table(WC.windows_table(x, index.reset_index(drop=True)), wdir / WC.FILE)


def test_clean_data_passes_and_report_is_written(clean, tmp_path):
    params, df, wdir = clean
    df.to_parquet(tmp_path / "features.parquet")
    summary = V.run(params, tmp_path / "features.parquet", wdir, tmp_path / "report")
    assert summary["warnings"] == 0
    text = (tmp_path / "report" / "summary.md").read_text()
    assert text.startswith("# Data validation: PASSED")
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert all(r["success"] for r in results["results"]) and len(results["results"]) > 30


def test_nan_feature_where_a_face_was_found(clean):
    params, df, wdir = clean
    df.loc[7, "mar"] = np.nan
    [f] = failures(params, df, wdir)
    assert f.expectation == "expect_column_values_to_not_be_null" and f.column == "mar"
    assert f.offending == [{"mar": "NaN", "video": df.loc[7, "video"], "frame": 7}]


def test_infinite_value_in_a_window(clean):
    params, df, wdir = clean

    def poison(x, index):
        x = x.copy()
        x[2, 3, 1] = np.inf
        x[4, 3, 1] = np.nan  # not observed: allowed
        return x, index

    rewrite(wdir, poison)
    [f] = failures(params, df, wdir)
    assert f.column == "x_inf" and f.unexpected_count == 1 and "no infinite value" in f.why


def test_out_of_range_ear(clean):
    params, df, wdir = clean
    df.loc[[3, 40], "ear_left"] = 1.5
    [f] = failures(params, df, wdir)
    assert f.expectation == "expect_column_values_to_be_between" and f.column == "ear_left"
    assert f.unexpected_count == 2 and {r["frame"] for r in f.offending} == {3, 40 % 30}
    assert "0..0.8" in f.line()


def test_the_per_frame_suite_in_batches_counts_offending_frames_over_all_of_them(clean, tmp_path, monkeypatch):
    """The features table is validated FRAME_BATCH frames at a time (memory for a batch): a breach in
    several batches is one failed expectation with every offending frame counted, read from disk too."""
    params, df, wdir = clean
    df.loc[[3, 40, 41, 650], "ear_left"] = 1.5
    whole = failures(params, df, wdir)
    df.to_parquet(tmp_path / "features.parquet")
    monkeypatch.setattr(V, "FRAME_BATCH", 300)
    assert len(df) > 2 * 300
    for source in (df, tmp_path / "features.parquet"):
        [f] = failures(params, source, wdir)
        assert f.column == "ear_left" and f.unexpected_count == 4 and f.offending == whole[0].offending
    outcomes, facts = V.validate(params, tmp_path / "features.parquet", wdir)
    assert facts["frames"] == len(df) and len(outcomes) == len(V.validate(params, df, wdir)[0])


def test_label_outside_the_class_set(clean):
    params, df, wdir = clean
    df["label"] = df["label"].astype(object)
    df.loc[5, "label"] = "sleeping"
    [f] = failures(params, df, wdir)
    assert f.column == "label" and f.offending[0]["label"] == "sleeping"


def test_subject_in_two_folds(clean):
    params, df, wdir = clean
    index = WC.read_windows(wdir)[2]
    moved = index.loc[index["fold"] == 0, "subject"].iloc[0]

    def leak(x, index):
        index = index.copy()
        rows = index.index[(index["subject"] == moved).to_numpy()][:3]
        index.loc[rows, "fold"] = 1
        return x, index

    rewrite(wdir, leak)
    [f] = failures(params, df, wdir)
    assert f.table == "window_subjects"
    assert f.offending == [{"n_folds": 2, "subject": moved, "folds": "0,1"}]
    assert "leaks" in f.line()


def test_missing_class_in_a_fold(clean):
    params, df, wdir = clean

    def drop_yawn(x, index):
        keep = ~((index["label"] == "yawn") & (index["fold"] == 2)).to_numpy()
        return x[keep], index[keep]

    rewrite(wdir, drop_yawn)
    fails = failures(params, df, wdir)
    [f] = [f for f in fails if f.table == "window_classes"]
    assert f.offending == [{"windows": 0.0, "fold": 2, "label": "yawn"}]


def test_critical_failure_stops_the_stage_with_names(clean, tmp_path):
    params, df, wdir = clean
    df.loc[3, "ear_left"] = 1.5
    df.to_parquet(tmp_path / "features.parquet")
    with pytest.raises(ValidationFailed, match=r"expect_column_values_to_be_between on 'ear_left'.*video=v_s0_normal"):
        V.run(params, tmp_path / "features.parquet", wdir, tmp_path / "report")
    assert (tmp_path / "report" / "summary.md").read_text().startswith("# Data validation: FAILED")


def test_report_lists_quarantined_inputs(clean, tmp_path):
    params, df, wdir = clean
    df.to_parquet(tmp_path / "features.parquet")
    q = tmp_path / "quarantine.json"
    q.write_text(
        json.dumps(
            {
                "quarantined": [
                    {
                        "video": "videos/bad.mp4",
                        "video_id": "videos__bad",
                        "stage": "frames",
                        "reason": "empty file (0 bytes)",
                    }
                ],
                "ignored_files": ["notes.txt"],
            }
        )
    )
    V.run(params, tmp_path / "features.parquet", wdir, tmp_path / "report", q)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "- quarantined inputs: 1: videos/bad.mp4 (frames: empty file (0 bytes))" in text
    assert "notes.txt" in text


def test_warnings_pass_but_are_reported(clean, tmp_path):
    params, df, wdir = clean
    first = df["video"].iloc[0]
    df.loc[df["video"] == first, "face_present"] = np.where(np.arange((df["video"] == first).sum()) % 2, 1.0, 0.0)
    face_cols = [n for n, f in REGISTRY.items() if f.face_derived]
    df.loc[(df["video"] == first) & (df["face_present"] == 0), face_cols] = np.nan
    df.to_parquet(tmp_path / "features.parquet")
    summary = V.run(params, tmp_path / "features.parquet", wdir, tmp_path / "report")
    assert summary["warnings"] == 1
    text = (tmp_path / "report" / "summary.md").read_text()
    assert text.startswith("# Data validation: PASSED with warnings") and f"video={first}" in text


def test_the_stage_cli_prints_its_own_lines_only(clean, tmp_path):
    """GX logs at INFO on some of its own loggers ("Created temporary directory ... for ephemeral docs site")."""
    _, df, wdir = clean
    df.to_parquet(tmp_path / "features.parquet")
    (tmp_path / "quarantine.json").write_text('{"quarantined": []}')
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"windows": {"size": 10, "stride": 5, "features": list(FEATS)}}))
    cmd = [sys.executable, "-m", "pipeline.stages", "validate", "--params", str(p)]
    cmd += ["--features", str(tmp_path / "features.parquet"), "--windows", str(wdir)]
    cmd += ["--quarantine", str(tmp_path / "quarantine.json"), "--out", str(tmp_path / "report")]
    res = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr  # the summary goes to stdout; nothing else to say
    assert '"warnings": 0' in res.stdout
