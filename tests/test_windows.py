"""Windows: labelling and drop counts, subject-grouped folds, the normaliser, the generic format."""

import numpy as np
import pandas as pd
import pytest

from pipeline.contracts import windows as WC
from pipeline.core.config import WindowsParams
from pipeline.core.errors import DataError, SplitError
from pipeline.stages import windows as W

CLASSES = ("normal", "phonecall", "text", "yawn")
FEATS = ("ear_left", "mar", "yaw", "face_present")


def fake_features(n_subjects=6, frames=40, seed=0, classes=CLASSES) -> pd.DataFrame:
    """A features table by hand: one video per subject and class, class-dependent values."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for ci, c in enumerate(classes):
            n = frames
            rows.append(
                pd.DataFrame(
                    {
                        "video": f"v_s{s}_{c}",
                        "subject": f"s{s}",
                        "label": c,
                        "frame": np.arange(n),
                        "t": np.arange(n) / 15,
                        "ear_left": 0.3 - 0.02 * ci + rng.normal(0, 0.01, n),
                        "mar": 0.1 + 0.2 * ci + rng.normal(0, 0.02, n),
                        "yaw": 5.0 * s + rng.normal(0, 2, n),
                        "face_present": 1.0,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def params(**kw) -> WindowsParams:
    base = {"size": 10, "stride": 5, "features": FEATS, "cv_folds": 5}
    return WindowsParams(**{**base, **kw})


def test_window_starts_labels_and_drop_counts():
    n = 30
    codes = np.r_[np.zeros(12, int), np.ones(13, int), -np.ones(5, int)]  # normal, phonecall, unlabelled
    face = np.ones(n)
    face[0:6] = 0  # the first window lacks a face
    bounds = np.array([0, n])
    starts, lab, cnt = W.window_starts(codes, face, bounds, 10, 5, 0.8, True)
    # candidates 0,5,10,15,20: 0 low face; 5 and 10 straddle two labels; 15 is phonecall; 20 has unlabelled frames
    assert cnt == {"candidates": 5, "dropped_mixed": 2, "dropped_unlabelled": 1, "dropped_low_face": 1}
    assert starts.tolist() == [15] and lab.tolist() == [1]
    _, lab2, cnt2 = W.window_starts(codes, np.ones(n), bounds, 10, 5, 0.8, drop_mixed=False)
    assert cnt2["dropped_mixed"] == 0 and lab2.tolist() == [0, 0, 1, 1]  # majority labels
    # two videos back to back: no window crosses the boundary, short videos give none
    st, _, c3 = W.window_starts(np.zeros(37, int), np.ones(37), np.array([0, 12, 21, 37]), 10, 5, 0.8, True)
    assert st.tolist() == [0, 21, 26] and c3["candidates"] == 3


def test_window_values_are_the_frames_they_cover():
    df = fake_features(n_subjects=3, frames=25).sample(frac=1.0, random_state=0)  # shuffled rows
    w, _ = W.make_windows(df, params(subject_baseline=False), CLASSES)
    ref = df.set_index(["video", "frame"]).sort_index()
    for i in (0, 7, len(w.index) - 1):
        r = w.index.iloc[i]
        want = ref.loc[r["video"]].loc[r["start_frame"] : r["end_frame"], list(FEATS)].to_numpy(np.float32)
        np.testing.assert_array_equal(w.x[i], want)
        assert ref.loc[(r["video"], r["start_frame"]), "label"] == r["label"]


def test_folds_are_by_subject_deterministic_balanced_and_cover_classes():
    df = fake_features(n_subjects=11)
    w1, m1 = W.build(df, params(), CLASSES)
    w2, _ = W.build(df, params(), CLASSES)
    assert w1.index["fold"].tolist() == w2.index["fold"].tolist()
    np.testing.assert_array_equal(w1.x, w2.x)
    assert (w1.index.groupby("subject", observed=True)["fold"].nunique() == 1).all()  # no subject in two folds
    per_fold = w1.index.groupby("fold")["subject"].nunique()
    assert per_fold.max() - per_fold.min() <= 1 and len(per_fold) == 5  # 11 subjects: 3, 2, 2, 2, 2
    for f in range(5):
        assert set(w1.index.loc[w1.index["fold"] == f, "label"]) == set(CLASSES)
    assert sorted(s for v in m1["subjects"].values() for s in v) == sorted(df["subject"].unique())
    seeds = {tuple(W.build(df, params(split_seed=s), CLASSES)[1]["subjects"]["0"]) for s in range(5)}
    assert len(seeds) > 1  # the seed decides which subjects share a fold


def test_fold_rows_keep_validation_and_scoring_off_the_training_side():
    folds = np.repeat(np.arange(5), 3)
    for r in WC.fold_rows(folds, 5):
        assert set(folds[r.test]) == {r.fold} and set(folds[r.val]) == {(r.fold + 1) % 5}
        assert not set(folds[r.train]) & {r.fold, (r.fold + 1) % 5} and len(r.train) == 9


def test_too_few_subjects_or_a_rare_class_is_a_clear_error():
    with pytest.raises(SplitError, match=r"6 subject\(s\) cannot fill 7 folds; set windows.cv_folds to at most 6"):
        W.build(fake_features(), params(cv_folds=7), CLASSES)
    df = fake_features()
    df = df[~((df["label"] == "yawn") & ~df["subject"].isin(["s0", "s1"]))]  # only 2 subjects ever yawn
    with pytest.raises(SplitError, match=r"class 'yawn' has no windows in fold \d.*\['s0', 's1'\].*cv_folds"):
        W.build(df, params(), CLASSES)


def test_values_are_stored_as_measured_and_the_normaliser_handles_nan():
    df = fake_features()
    df.loc[df.index[:3], "yaw"] = np.nan
    w, meta = W.build(df, params(subject_baseline=False), CLASSES)
    assert np.isnan(w.x).any() and meta["observed_fraction"]["yaw"] < 1
    norm = WC.Normaliser.fit(w.x)
    z = norm.apply(w.x)
    assert not np.isnan(z).any()
    flat = z.reshape(-1, len(FEATS))
    np.testing.assert_allclose(flat[:, :3].mean(0), 0, atol=1e-3)  # NaN -> 0, the training mean
    np.testing.assert_allclose(flat[:, 1].std(0), 1, atol=1e-3)
    assert WC.Normaliser.from_dict(norm.as_dict()).apply(w.x[:2]).tolist() == norm.apply(w.x[:2]).tolist()


def test_subject_baseline_removes_each_drivers_offset():
    df = fake_features()  # yaw has a per-subject offset of 5 degrees x subject
    raw_w, _ = W.build(df, params(subject_baseline=False), CLASSES)
    base_w, meta = W.build(df, params(subject_baseline=True), CLASSES)
    yaw = FEATS.index("yaw")
    spread = lambda w: w.index.assign(v=w.x[:, :, yaw].mean(1)).groupby("subject")["v"].mean().std()  # noqa: E731
    assert spread(base_w) < 0.2 * spread(raw_w)
    assert meta["normalisation"]["subject_baseline"] is True


def test_generic_format_round_trip_of_a_hand_made_data_set(tmp_path):
    """Written by hand (3 classes, 7 features, length 20), read back with everything from the data."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    classes, feats, t, n = ["a", "b", "c"], [f"f{i}" for i in range(7)], 20, 18
    x = rng.normal(size=(n, t, 7)).astype(np.float32)
    table = pa.table(
        {
            "window_id": [f"w{i}" for i in range(n)],
            "video": [f"vid{i}" for i in range(n)],
            "subject": [f"subj{i % 6}" for i in range(n)],
            "label": [classes[i % 3] for i in range(n)],
            "fold": np.array([i % 6 % 3 for i in range(n)], np.int16),
            "start_frame": np.zeros(n, np.int32),
            "end_frame": np.full(n, t - 1, np.int32),
            "start_t": np.zeros(n),
            "end_t": np.full(n, (t - 1) / 10),
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), t * 7),
        }
    )
    pq.write_table(table, tmp_path / "windows.parquet")
    meta = {"format": WC.FORMAT, "features": feats, "classes": classes, "window": t, "folds": 3}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    x2, y, index, meta = WC.read_windows(tmp_path)
    np.testing.assert_array_equal(x2, x)
    assert y.tolist() == [0, 1, 2] * 6 and meta["classes"] == classes
    assert list(index.columns[:3]) == ["window_id", "video", "subject"]
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format": "driver-windows/1"}))
    with pytest.raises(DataError, match="rerun the windows stage"):
        WC.read_windows(tmp_path)


def test_stage_writes_the_format(tmp_path):
    df = fake_features()
    w, meta = W.build(df, params(), CLASSES)
    WC.write_windows(w, meta, tmp_path)
    x, y, index, meta2 = WC.read_windows(tmp_path)
    assert x.shape == w.x.shape and meta2["folds"] == 5
    assert (index["end_frame"] - index["start_frame"] == 9).all()
    order = w.index.set_index("window_id").loc[index["window_id"]]
    assert (order["label"].to_numpy() == np.asarray(CLASSES)[y]).all()
    assert (order["fold"].to_numpy() == index["fold"].to_numpy()).all()
    assert len(x) == meta["counts"]["kept"]


@pytest.mark.slow
def test_the_readmes_hand_written_windows_train_and_evaluate(tmp_path):
    """The README's own example (the five required meta.json keys only) through the real train and
    evaluate stages; a meta.json without a required key is an error naming it."""
    import json
    import os
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The windows format") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--model", "stats_lr", "--params", str(ROOT / "params.yaml"), "--windows", "my_windows"]
    for stage in ("train", "evaluate"):
        cmd = [sys.executable, "-m", "pipeline.stages", stage, *common, "--models", "m", "--reports", "r"]
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "stats_lr" / "metrics.json").read_text())["cv"]["macro_f1"] >= 0
    meta = json.loads((tmp_path / "my_windows" / "meta.json").read_text())
    del meta["folds"]
    (tmp_path / "my_windows" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"lacks \['folds'\]"):
        WC.read_windows(tmp_path / "my_windows")
