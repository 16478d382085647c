"""bench/real_blinks.py: the paper's UTA-RLDD blink windows -> the windows format, participants and
videos recovered from the files' order, any window length cut from the rebuilt blink sequences.

The files are made here the way the paper's Preprocessing.py makes them (per participant: the alert,
low-vigilant and drowsy videos' windows of 30 blinks at stride 2, a video of fewer than 30 blinks one
window with zeros in front), from known blink sequences, so every value can be checked."""

import importlib.util
import sys

import numpy as np
import pytest

from pipeline.contracts.windows import read_windows
from pipeline.core.config import parse_params
from tests.conftest import ROOT


def _bench():
    spec = importlib.util.spec_from_file_location("real_blinks", ROOT / "bench" / "real_blinks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_blinks", module)
    spec.loader.exec_module(module)
    return module


def _unroll(seq: np.ndarray, window: int = 30, stride: int = 2) -> np.ndarray:
    """The paper's cutting: windows at ``stride``; a short video one window, zeros in front."""
    if len(seq) <= window:
        out = np.zeros((1, window, 4))
        out[0, -len(seq) :] = seq
        return out
    return np.stack([seq[i : i + window] for i in range(0, len(seq) - window + 1, stride)])


@pytest.fixture(scope="module")
def paper_files(tmp_path_factory):
    """5 folds x 2 participants x 3 videos of known blinks; one video per fold shorter than 30 blinks."""
    src = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(0)
    videos = {}
    for f in range(5):
        xs, ys = [], []
        for p in range(2):
            for level in (0.0, 5.0, 10.0):
                n = 12 if (p, level) == (1, 5.0) else int(rng.integers(31, 80))
                seq = rng.normal(size=(n, 4)) + level / 10
                videos[(f, p, level)] = seq
                w = _unroll(seq)
                xs.append(w)
                ys.append(np.full((len(w), 1), level))
        np.save(src / f"BlinksTest_30_Fold{f + 1}.npy", np.concatenate(xs))
        np.save(src / f"LabelsTest_30_Fold{f + 1}.npy", np.concatenate(ys))
    return src, videos


@pytest.mark.parametrize("window", [30, 45])
def test_the_papers_windows_become_the_windows_format_with_participants_and_videos(paper_files, tmp_path, window):
    bench = _bench()
    src, videos = paper_files
    meta = bench.convert(src, tmp_path / "w", window)
    x, _, index, read_meta = read_windows(tmp_path / "w")
    assert read_meta["window"] == window and meta["classes"] == ["alert", "low_vigilant", "drowsy"]
    assert index["subject"].nunique() == 10 and index.groupby("subject")["fold"].nunique().max() == 1
    assert (index.groupby("fold")["subject"].nunique() == 2).all()
    assert index["window_id"].is_unique and index.groupby("video")["label"].nunique().max() == 1
    names = {0.0: "alert", 5.0: "low_vigilant", 10.0: "drowsy"}
    for (f, p, level), seq in videos.items():
        rows = np.flatnonzero(index["video"].to_numpy() == f"f{f + 1}p{p:02d}_{names[level]}")
        if len(seq) > 30:  # the paper's windows end at the last full stride: later blinks are not in its files
            seq = seq[: 30 + 2 * (len(_unroll(seq)) - 1)]
        expect = _unroll(seq, window)
        assert len(rows) == len(expect)
        got = x[rows].astype(np.float64)
        if len(seq) <= window:  # the padding is not blinks: NaN (not observed), the blinks as they were
            assert np.isnan(got[0, : window - len(seq)]).all()
            np.testing.assert_allclose(got[0, window - len(seq) :], seq, rtol=1e-6)
        else:
            np.testing.assert_allclose(got, expect, rtol=1e-6)
            assert index["start_frame"].to_numpy()[rows].tolist() == list(range(0, 2 * len(rows), 2))


def test_the_converted_set_trains_with_the_train_stage(paper_files, tmp_path):
    from pipeline.contracts.predictions import read_oof
    from pipeline.stages import train

    _bench().convert(paper_files[0], tmp_path / "w")
    p = parse_params({"train": {"models": ["stats_lr"]}})
    train.run(p, "stats_lr", tmp_path / "w", tmp_path / "models", tmp_path / "reports")
    y, proba, index, _ = read_oof(tmp_path / "models" / "stats_lr" / "oof.parquet")
    assert len(y) == len(index) and np.isfinite(proba).all()


def test_the_running_mean_averages_each_window_with_the_earlier_ones_of_its_video():
    import pandas as pd

    index = pd.DataFrame({"video": ["a", "b", "a", "a"], "start_t": [2.0, 0.0, 0.0, 4.0]})
    proba = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.1, 0.9]])
    out = _bench().running_mean(proba, index)
    np.testing.assert_allclose(out, [[0.4, 0.6], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
