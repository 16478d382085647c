"""The windows contract (generic: any multivariate sequence data set written in it trains and
evaluates without code changes; README "The windows format").

* ``<dir>/windows.parquet``: one row per window with ``window_id, video, subject, label,
  fold, start_frame, end_frame, start_t, end_t`` and ``x``, a fixed-size list of
  ``window * n_features`` float32 values, time-major (``x`` reshaped to
  ``(window, n_features)`` is the window; with ``windows.pool`` > 1 each of its steps is the mean of
  ``pool`` frames). ``x`` holds the features as measured (after the
  optional per-subject baseline), NaN where a feature was not observed (no hand, no face);
  z-scoring happens per training side (:class:`Normaliser`), so the values a model is
  evaluated on never shaped its normalisation.
* ``fold`` (0 .. k-1) is the subject-grouped cross-validation fold: all windows of a
  subject share one fold. :func:`fold_rows` says which rows train, validate (early
  stopping) and evaluate in each fold.
* The per-subject baseline (``windows.subject_baseline``) is :func:`subject_baseline`: each
  driver's per-feature median, flags (:data:`FLAG_FEATURES`) left as they are; prediction on
  new video (pipeline/apply) subtracts the same definition for a new driver.
* ``<dir>/meta.json``: ``format``, ``features`` (names, in column order of ``x``),
  ``classes`` (label order), ``window`` (time steps), ``pool`` (frames per step), ``folds`` (k),
  plus provenance: subjects per fold, counts, the baseline used.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.files import read_json, write_json, write_table

FORMAT = "driver-windows/2"
FILE = "windows.parquet"
INDEX_COLUMNS = ("window_id", "video", "subject", "label", "fold", "start_frame", "end_frame", "start_t", "end_t")


# Presence flags stay 0/1 under a subject baseline; everything else is a measurement.
FLAG_FEATURES = {"face_present", "hand_present"}
BASELINE_SAMPLE = 2048  # frames per subject for the baseline median


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


def cut_windows(x_all: np.ndarray, starts: np.ndarray, size: int, pool: int = 1) -> np.ndarray:
    """Windows (k, size // pool, F) of per-frame rows ``x_all`` (n, F) starting at rows ``starts``:
    ``size`` frames each, every ``pool`` consecutive frames averaged into one step (:func:`pool_steps`)."""
    from numpy.lib.stride_tricks import sliding_window_view

    view = sliding_window_view(x_all, size, axis=0)
    if pool == 1:
        return np.ascontiguousarray(view[starts].transpose(0, 2, 1))
    chunk = max(1, (1 << 24) // max(1, size * x_all.shape[1]))  # ~64 MB of unpooled frames at a time
    parts = [pool_steps(view[starts[i : i + chunk]].transpose(0, 2, 1), pool) for i in range(0, len(starts), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, size // pool, x_all.shape[1]), np.float32)


def pool_steps(x: np.ndarray, pool: int) -> np.ndarray:
    """Windows (k, T, F) -> (k, T // pool, F): the mean of the observed (non-NaN) values of each
    ``pool`` consecutive frames, NaN where none was observed (``windows.pool``; 1 returns ``x``).

    Summed frame by frame in a fixed order (elementwise adds), so the bytes do not depend on the
    CPU's SIMD width, unlike a reduction."""
    if pool == 1:
        return x
    k, t, f = x.shape
    steps = x[:, : t - t % pool].reshape(k, t // pool, pool, f)
    total = np.zeros((k, t // pool, f), np.float32)
    seen = np.zeros((k, t // pool, f), np.float32)
    for j in range(pool):
        v = steps[:, :, j]
        ok = np.isfinite(v)
        total += np.where(ok, v, np.float32(0))
        seen += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, total / seen, np.float32(np.nan)).astype(np.float32)


@dataclass
class Windows:
    """Windows in memory: values (N, T, F) and one index row per window."""

    x: np.ndarray
    index: pd.DataFrame


@dataclass(frozen=True)
class FoldRows:
    """Row numbers of one cross-validation fold: fit on ``train``, stop early on ``val``,
    score on ``test`` (the fold's own subjects, never seen by its model)."""

    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def fold_rows(folds: np.ndarray, k: int) -> list[FoldRows]:
    """Fold ``f`` is scored on its own subjects, stops early on fold ``f + 1`` (mod k), and
    trains on the remaining k - 2 folds: inner validation subjects come from the training side."""
    folds = np.asarray(folds)
    out = []
    for f in range(k):
        v = (f + 1) % k
        train = np.flatnonzero((folds != f) & (folds != v))
        out.append(FoldRows(f, train, np.flatnonzero(folds == v), np.flatnonzero(folds == f)))
    return out


@dataclass(frozen=True)
class Normaliser:
    """Per-feature z-score fitted on training windows; NaN (not observed) becomes 0, the training mean."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, x: np.ndarray) -> Normaliser:
        import warnings

        flat = x.reshape(-1, x.shape[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a feature never observed: mean of nothing
            mean = np.nanmean(flat, axis=0, dtype=np.float64)
            std = np.nanstd(flat, axis=0, dtype=np.float64)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.where(np.isfinite(std) & (std > 1e-6), std, 1.0)
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std))

    def apply(self, x: np.ndarray) -> np.ndarray:
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        z = (np.asarray(x, np.float32) - mean) / std
        return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}  # exact: JSON round-trips a float64

    @classmethod
    def from_dict(cls, d: dict) -> Normaliser:
        return cls(tuple(d["mean"]), tuple(d["std"]))


META_REQUIRED = ("format", "features", "classes", "window", "folds")
# what the windows stage adds, as a hand-written set means it (README 'The windows format')
META_DEFAULTS = {
    "task": "distraction",
    "pool": 1,
    "normalisation": {"subject_baseline": False},
}


def read_meta(out_dir: Path) -> dict:
    path = Path(out_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"{path} not found: run the windows stage first (dvc repro windows)")
    meta = read_json(path)
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{path} is format {meta.get('format')!r}, this pipeline reads {FORMAT!r}: rerun the windows stage"
        )
    missing = [k for k in META_REQUIRED if k not in meta]
    if missing:
        raise DataError(
            f"{path} lacks {missing}: a windows meta.json needs {list(META_REQUIRED)} (README 'The windows format')"
        )
    return {**meta, **{k: v for k, v in META_DEFAULTS.items() if k not in meta}}  # the file's order kept


def windows_table(x: np.ndarray, index: pd.DataFrame):
    """The windows as a pyarrow Table in the windows format."""
    import pyarrow as pa

    _, t, f = x.shape
    cols = {c: pa.array(index[c].to_numpy()) for c in INDEX_COLUMNS}
    cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), t * f)
    return pa.table(cols)


def write_windows(w: Windows, meta: dict, out_dir: Path) -> None:
    """Write the windows (sorted by fold, video, start) and meta.json last (a reader never sees a half set)."""
    order = w.index.sort_values(["fold", "video", "start_frame"], kind="stable").index.to_numpy()
    table = windows_table(w.x[order], w.index.iloc[order].reset_index(drop=True))
    small = {k: meta[k] for k in ("format", "features", "classes", "window", "folds")}
    table = table.replace_schema_metadata({b"windows": json.dumps(small).encode()})
    write_table(table, Path(out_dir) / FILE)
    write_json(Path(out_dir) / "meta.json", meta)


def read_index(out_dir: Path) -> pd.DataFrame:
    """The index rows only (no values): cheap, for reports."""
    import pyarrow.parquet as pq

    return pq.read_table(Path(out_dir) / FILE, columns=list(INDEX_COLUMNS)).to_pandas()


def read_windows(out_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """Read the windows: x (N, T, F) float32 as stored (not z-scored), y (N,) class indices,
    the index rows, and meta. Everything (features, classes, window length, folds) comes from
    the data itself."""
    import pyarrow.parquet as pq

    meta = read_meta(out_dir)
    path = Path(out_dir) / FILE
    table = pq.read_table(path)
    t, f = int(meta["window"]), len(meta["features"])
    col = table.column("x").combine_chunks()
    x = col.values.to_numpy(zero_copy_only=False).reshape(len(col), t, f)
    index = table.drop(["x"]).to_pandas()
    unknown = sorted(set(index["label"]) - set(meta["classes"]))
    if unknown:
        raise DataError(f"{path} has labels {unknown} not in meta.json classes; rerun the windows stage")
    k = int(meta["folds"])
    folds = index["fold"].to_numpy()
    if len(folds) and (folds.min() < 0 or folds.max() >= k):
        raise DataError(f"{path} has fold numbers outside 0..{k - 1} (meta.json folds); rerun the windows stage")
    y = index["label"].map({c: i for i, c in enumerate(meta["classes"])}).to_numpy(np.int64)
    return x, y, index, meta
