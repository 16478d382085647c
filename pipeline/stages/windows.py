"""`windows` stage: fixed-length windows over each video, split by SUBJECT, normalised on train.

The windows format (generic: any multivariate sequence data set written in it trains
and evaluates without code changes; see README "The windows format"):

* ``<dir>/{train,val,test}.parquet``: one row per window with ``window_id, video,
  subject, label, split, start_frame, end_frame, start_t, end_t`` and ``x``, a
  fixed-size list of ``window * n_features`` float32 values, time-major (``x`` reshaped
  to ``(window, n_features)`` is the window). No NaN.
* ``<dir>/meta.json``: ``format``, ``features`` (names, in column order of ``x``),
  ``classes`` (label order), ``window``, plus provenance: normalisation, counts.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contracts.features import read_features
from pipeline.contracts.windows import FORMAT, SPLITS, Windows, write_windows
from pipeline.core.config import Params, WindowsParams, load_params
from pipeline.core.errors import ConfigError, DataError, SplitError
from pipeline.core.runtime import FeaturesPath, ParamsOpt, run_stage

log = logging.getLogger(__name__)

# Presence flags stay 0/1 under a subject baseline; everything else is a measurement.
FLAG_FEATURES = {"face_present", "hand_present"}
BASELINE_SAMPLE = 2048  # frames per subject for the baseline median


def window_starts(
    codes: np.ndarray, face: np.ndarray, bounds: np.ndarray, size: int, stride: int, min_face: float, drop_mixed: bool
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Which windows to keep and their labels, for all videos at once (O(frames + windows)).

    Args:
        codes: (n,) label code per frame (-1 = unlabelled); face: (n,) 0/1 face presence;
        bounds: (v + 1,) row where each video starts, then n (rows sorted by video, frame).
    Returns:
        (first rows, label codes) of the kept windows, and the drop counts. Windows never
        cross a video boundary.
    """
    lengths = np.diff(bounds)
    per_video = np.where(lengths >= size, (lengths - size) // stride + 1, 0)
    first = np.repeat(bounds[:-1], per_video)
    offset = np.arange(per_video.sum()) - np.repeat(np.cumsum(per_video) - per_video, per_video)
    starts = first + offset * stride
    end = starts + size  # exclusive
    # counts inside [start, end) from prefix sums
    changes = np.r_[0, np.cumsum(codes[1:] != codes[:-1])]  # label changes before each row
    unl = np.r_[0, np.cumsum(codes < 0)]
    fc = np.r_[0.0, np.cumsum(face, dtype=np.float64)]
    mixed_any = changes[end - 1] - changes[starts] > 0
    unlabelled = unl[end] - unl[starts] > 0
    mixed = mixed_any & ~unlabelled
    low_face = (fc[end] - fc[starts]) / size < min_face
    label = codes[starts].copy()
    if not drop_mixed and mixed.any():  # majority label of a mixed window
        label[mixed] = [np.bincount(codes[a : a + size]).argmax() for a in starts[mixed]]
    drop_mix = mixed if drop_mixed else np.zeros_like(mixed)
    keep = ~unlabelled & ~drop_mix & ~low_face
    counts = {
        "candidates": len(starts),
        "dropped_mixed": int(drop_mix.sum()),
        "dropped_unlabelled": int(unlabelled.sum()),
        "dropped_low_face": int((low_face & ~unlabelled & ~drop_mix).sum()),
    }
    return starts[keep], label[keep], counts


def subject_baseline(x: np.ndarray, subject_codes: np.ndarray, is_flag: np.ndarray) -> np.ndarray:
    """Each subject's per-feature median (0 for flags): (n_subjects, F).

    Taken over an evenly spaced sample of at most ``BASELINE_SAMPLE`` of the subject's
    frames (deterministic): consecutive frames are near-duplicates, and the median of
    2,048 frames is as good a resting value as that of 100,000, at a fraction of the cost.
    """
    import warnings

    order = np.argsort(subject_codes, kind="stable")
    bounds = np.searchsorted(subject_codes[order], np.arange(int(subject_codes.max()) + 2))
    med = np.zeros((len(bounds) - 1, x.shape[1]), np.float32)
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        rows = x[order[a : b : max(1, -(-(b - a) // BASELINE_SAMPLE))]].T.copy()  # (F, <= sample), row-contiguous
        med[k] = np.median(rows, axis=1)  # partition-based; NaN only where a column holds NaN
        bad = np.isnan(med[k])
        if bad.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no hands ever): stays NaN
                med[k, bad] = np.nanmedian(rows[bad], axis=1)
    med[:, is_flag] = 0.0
    return np.nan_to_num(med, nan=0.0)


def split_subjects(
    class_by_subject: dict[str, set[str]], classes: tuple[str, ...], val: float, test: float, seed: int
) -> dict[str, str]:
    """Assign each subject to one split, deterministic for ``seed``.

    Subjects are shuffled by ``seed``; if a split lacks a class, the next of up to 200
    seeded shuffles is tried, and if none covers every class in every split the error
    names the class, the split and what to change.
    """
    subjects = sorted(class_by_subject)
    n = len(subjects)
    if n < 3:
        raise SplitError(f"{n} subject(s) found; a subject split needs at least 3 (train, val, test)")
    n_test = max(1, round(test * n))
    n_val = max(1, round(val * n))
    if n_test + n_val >= n:
        raise SplitError(
            f"{n} subjects cannot give {n_val} val + {n_test} test and keep any for training; "
            "lower windows.val_fraction / windows.test_fraction"
        )
    rng = np.random.default_rng(seed)
    missing: list[tuple[str, str]] = []
    for _ in range(200):
        order = list(rng.permutation(subjects))
        assign = {s: "test" for s in order[:n_test]} | {s: "val" for s in order[n_test : n_test + n_val]}
        assign |= {s: "train" for s in order[n_test + n_val :]}
        missing = [
            (c, sp)
            for sp in SPLITS
            for c in classes
            if not any(c in class_by_subject[s] for s, a in assign.items() if a == sp)
        ]
        if not missing:
            return dict(sorted(assign.items()))
    c, sp = missing[0]
    have = sorted(s for s, cs in class_by_subject.items() if c in cs)
    raise SplitError(
        f"class '{c}' has no windows in split '{sp}' under any of 200 subject shuffles of seed {seed}; "
        f"only subjects {have} have '{c}' windows. Add data for '{c}', lower windows.min_face_fraction or "
        f"windows.size, or change windows.val_fraction / windows.test_fraction"
    )


def _codes(col: pd.Series, categories: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and their sorted values (-1 = missing or not in ``categories``).

    Categorical columns (as the features stage writes them) cost nothing; others are factorised.
    """
    if not isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype("category")
    cat = col.cat.set_categories(sorted(col.cat.categories) if categories is None else categories)
    return cat.cat.codes.to_numpy(np.int64), cat.cat.categories.to_numpy()


def _window_ids(videos: np.ndarray, vcode: np.ndarray, start: np.ndarray) -> np.ndarray:
    """``<video>:<start frame>`` for every window, built column-wise by Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = pa.DictionaryArray.from_arrays(pa.array(vcode, pa.int32()), pa.array(videos, pa.string()))
    ids = pc.binary_join_element_wise(pc.cast(names, pa.string()), pc.cast(pa.array(start), pa.string()), ":")
    return ids.to_numpy(zero_copy_only=False)


def make_windows(features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...]) -> tuple[Windows, dict]:
    """Cut every video into windows (no split, no normalisation yet); returns windows and counts."""
    from numpy.lib.stride_tricks import sliding_window_view

    missing = [f for f in p.features if f not in features.columns]
    if missing:
        raise ConfigError(
            f"params key 'windows.features' names {missing}, not columns of the features table; "
            f"known: {[c for c in features.columns if features[c].dtype.kind == 'f']}"
        )
    feats = list(p.features)
    vcode, videos = _codes(features["video"])
    frame_all = features["frame"].to_numpy()
    dv = np.diff(vcode)
    if not np.all((dv > 0) | ((dv == 0) & (np.diff(frame_all) > 0))):  # sort only when needed (O(n) check)
        order = np.lexsort((frame_all, vcode))
        features = features.iloc[order]
        vcode, frame_all = vcode[order], frame_all[order]
    # row-major: pandas hands back column-major blocks, which made the window gather ~10x slower
    x_all = np.array(features[feats].to_numpy(np.float32), order="C")  # our own writable copy
    scode, subjects = _codes(features["subject"])
    if p.subject_baseline:
        base = subject_baseline(x_all, scode, np.array([f in FLAG_FEATURES for f in feats]))
        x_all -= base[scode]
    codes_all, _ = _codes(features["label"], list(classes))
    face_all = features["face_present"].to_numpy(np.float32) if "face_present" in features else np.ones(len(x_all))
    bounds = np.searchsorted(vcode, np.arange(len(videos) + 1))
    s, labels, totals = window_starts(codes_all, face_all, bounds, p.size, p.stride, p.min_face_fraction, p.drop_mixed)
    if not len(s):
        raise DataError(
            f"no window survived (candidates {totals['candidates']}: {totals['dropped_mixed']} mixed labels, "
            f"{totals['dropped_low_face']} low face presence, {totals['dropped_unlabelled']} unlabelled); "
            "lower windows.size or windows.min_face_fraction, or set windows.drop_mixed to false"
        )
    x = np.ascontiguousarray(sliding_window_view(x_all, p.size, axis=0)[s].transpose(0, 2, 1))  # (k, size, F)
    e = s + p.size - 1
    t_all = features["t"].to_numpy()
    index = pd.DataFrame(
        {
            "window_id": _window_ids(np.asarray(videos, dtype=object), vcode[s], frame_all[s]),
            "video": pd.Categorical.from_codes(vcode[s], videos),
            "subject": pd.Categorical.from_codes(scode[s], subjects),
            "label": pd.Categorical.from_codes(labels, list(classes)),
            "start_frame": frame_all[s].astype(np.int32),
            "end_frame": frame_all[e].astype(np.int32),
            "start_t": t_all[s],
            "end_t": t_all[e],
        }
    )
    totals["kept"] = len(index)
    return Windows(x, index), totals


def normalise(w: Windows, train: np.ndarray) -> tuple[np.ndarray, dict]:
    """z-score with mean/std of the TRAIN windows' values; NaN (never observed) -> 0 = train mean."""
    xt = w.x[train].reshape(-1, w.x.shape[2])
    mean = np.nanmean(xt, axis=0)
    std = np.nanstd(xt, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
    z = (w.x - mean) / std
    n_nan = np.isnan(z).sum(axis=(0, 1))
    z = np.nan_to_num(z, nan=0.0).astype(np.float32)
    return z, {"mean": mean.tolist(), "std": std.tolist(), "imputed_nan": n_nan.tolist()}


def build(features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...]) -> tuple[Windows, dict]:
    """Features table -> split, normalised windows and the meta dictionary."""
    w, counts = make_windows(features, p, classes)
    pairs = w.index[["subject", "label"]].astype(str).drop_duplicates()
    by_subject = {s: set(g["label"]) for s, g in pairs.groupby("subject")}
    assign = split_subjects(by_subject, classes, p.val_fraction, p.test_fraction, p.split_seed)
    w.index["split"] = w.index["subject"].astype(str).map(assign)
    w.x, norm = normalise(w, (w.index["split"] == "train").to_numpy())
    per_split = {
        sp: {c: int(((w.index["split"] == sp) & (w.index["label"] == c)).sum()) for c in classes} for sp in SPLITS
    }
    meta = {
        "format": FORMAT,
        "features": list(p.features),
        "classes": list(classes),
        "window": p.size,
        "stride": p.stride,
        "normalisation": {"fitted_on": "train", "subject_baseline": p.subject_baseline, **norm},
        "subjects": {sp: sorted(s for s, a in assign.items() if a == sp) for sp in SPLITS},
        "counts": {**counts, "per_split": per_split},
    }
    return w, meta


def run(params: Params, features_path: Path, out_dir: Path) -> dict:
    """features.parquet -> windows/{train,val,test}.parquet + meta.json."""
    w, meta = build(read_features(features_path), params.windows, params.data.classes)
    write_windows(w, meta, out_dir)
    c = meta["counts"]
    log.info(
        "windows: kept %d of %d (dropped: %d mixed labels, %d low face presence, %d unlabelled)",
        c["kept"],
        c["candidates"],
        c["dropped_mixed"],
        c["dropped_low_face"],
        c["dropped_unlabelled"],
    )
    return {"kept": c["kept"], **{sp: int((w.index["split"] == sp).sum()) for sp in SPLITS}}


def main(
    params: ParamsOpt = Path("params.yaml"),
    features_path: FeaturesPath = Path("data/features.parquet"),
    out: Path = Path("data/windows"),
) -> None:
    """Fixed-length windows, split by subject, normalised on train."""
    run_stage(lambda: run(load_params(params), features_path, out))
