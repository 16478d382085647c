"""`windows` stage: fixed-length windows over each video, each SUBJECT in one cross-validation fold.

Writes the windows contract (pipeline/contracts/windows.py, README "The windows format"):
``windows.parquet`` with a ``fold`` per window (all windows of a subject share it) and
``meta.json``. Values are stored as measured, after the optional per-subject baseline
(each driver's own median subtracted); z-scoring is fitted by each model on its own
training windows, so no statistic of an evaluated subject shapes its model.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contracts.features import read_features
from pipeline.contracts.windows import FLAG_FEATURES, FORMAT, Windows, WindowsWriter, cut_windows, subject_baseline
from pipeline.core.config import Params, WindowsParams, load_params
from pipeline.core.errors import ConfigError, DataError, SplitError
from pipeline.core.runtime import FeaturesPath, ParamsOpt, run_stage

log = logging.getLogger(__name__)


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


def assign_folds(
    windows_by_subject: dict[str, dict[str, int]], classes: tuple[str, ...], k: int, seed: int
) -> dict[str, int]:
    """Assign each subject to one of ``k`` cross-validation folds, deterministic for ``seed``.

    Subjects are taken in a seeded random order and each goes to the fold with the fewest
    subjects so far (ties: fewest windows), so folds differ by at most one subject and are
    close in size. Every class must have windows in every fold (each fold's model is stopped
    early on one fold and scored on another); if a shuffle misses a class, the next of up to
    200 is tried, and if none works the error names the class, the fold and what to change.
    """
    subjects = sorted(windows_by_subject)
    n = len(subjects)
    if n < 3:
        raise SplitError(
            f"{n} subject(s) found; subject-grouped cross-validation needs at least 3 (one to score, one for "
            "early stopping, one to train on): add videos of more drivers"
        )
    if n < k:
        raise SplitError(f"{n} subject(s) cannot fill {k} folds; set windows.cv_folds to at most {n}")
    rng = np.random.default_rng(seed)
    missing: tuple[str, int] | None = None
    for _ in range(200):
        n_subj, n_win = [0] * k, [0] * k
        assign: dict[str, int] = {}
        for s in rng.permutation(subjects):
            f = min(range(k), key=lambda i: (n_subj[i], n_win[i], i))
            assign[str(s)] = f
            n_subj[f] += 1
            n_win[f] += sum(windows_by_subject[s].values())
        missing = next(
            (
                (c, f)
                for f in range(k)
                for c in classes
                if not any(windows_by_subject[s].get(c, 0) for s, a in assign.items() if a == f)
            ),
            None,
        )
        if missing is None:
            return dict(sorted(assign.items()))
    assert missing is not None
    c, f = missing
    have = sorted(s for s, cs in windows_by_subject.items() if cs.get(c, 0))
    raise SplitError(
        f"class '{c}' has no windows in fold {f} under any of 200 subject shuffles of seed {seed}; only "
        f"{len(have)} subject(s) {have} have '{c}' windows and each of the {k} folds needs one. Lower "
        f"windows.cv_folds, add data for '{c}', or lower windows.min_face_fraction or windows.size"
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


@dataclass
class Plan:
    """Which windows to cut, before any is cut: the per-frame values, each window's first frame row,
    the index rows and the drop counts. Memory: the frames and one index row per window."""

    x_all: np.ndarray  # (frames, F) float32, after the optional per-subject baseline
    starts: np.ndarray  # (N,) first row in x_all of each window
    index: pd.DataFrame
    counts: dict[str, int]
    size: int
    pool: int

    def cut(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The values (k, size // pool, F) of windows ``rows``."""
        return cut_windows(self.x_all, self.starts[rows], self.size, self.pool)


def plan_windows(features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...]) -> Plan:
    """Find every window of every video (no folds yet, none cut)."""
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
    return Plan(x_all, s, index, totals, p.size, p.pool)


def make_windows(features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...]) -> tuple[Windows, dict]:
    """Cut every video into windows in memory (no folds yet); returns windows and counts."""
    plan = plan_windows(features, p, classes)
    return Windows(plan.cut(), plan.index), plan.counts


def plan_folds(
    features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...], task: str = "distraction"
) -> tuple[Plan, dict]:
    """Features table -> the windows' plan with each window's cross-validation fold, sorted as the file
    stores them (fold, video, start), and the meta dictionary (``observed_fraction`` still to come)."""
    plan = plan_windows(features, p, classes)
    per_subject = plan.index.groupby(["subject", "label"], observed=True).size()
    by_subject: dict[str, dict[str, int]] = {}
    for (s, c), n in per_subject.items():
        by_subject.setdefault(str(s), {})[str(c)] = int(n)
    assign = assign_folds(by_subject, classes, p.cv_folds, p.split_seed)
    plan.index["fold"] = plan.index["subject"].astype(str).map(assign).astype(np.int16)
    per_fold = {
        str(f): {c: int(((plan.index["fold"] == f) & (plan.index["label"] == c)).sum()) for c in classes}
        for f in range(p.cv_folds)
    }
    order = plan.index.sort_values(["fold", "video", "start_frame"], kind="stable").index.to_numpy()
    plan = dataclasses.replace(plan, starts=plan.starts[order], index=plan.index.iloc[order].reset_index(drop=True))
    meta = {
        "format": FORMAT,
        "task": task,
        "features": list(p.features),
        "classes": list(classes),
        "window": p.size // p.pool,  # time steps of x
        "pool": p.pool,  # frames averaged into one step
        "stride": p.stride,
        "folds": p.cv_folds,
        "normalisation": {
            "subject_baseline": p.subject_baseline,
            "z_score": "fitted on each model's training windows when it trains (stored with the model)",
        },
        "observed_fraction": {},  # set when the windows are cut (observed_fraction)
        "subjects": {str(f): sorted(s for s, a in assign.items() if a == f) for f in range(p.cv_folds)},
        "counts": {**plan.counts, "per_fold": per_fold},
    }
    return plan, meta


def observed_fraction(features: tuple[str, ...] | list[str], finite: np.ndarray, steps: int) -> dict[str, float]:
    """Share of the windows' steps where each feature was observed (finite), for meta.json."""
    share = finite / max(1, steps)
    return dict(zip(features, np.round(share, 4).tolist(), strict=True))


def build(
    features: pd.DataFrame, p: WindowsParams, classes: tuple[str, ...], task: str = "distraction"
) -> tuple[Windows, dict]:
    """Features table -> windows in memory with their cross-validation fold, and the meta dictionary."""
    plan, meta = plan_folds(features, p, classes, task)
    x = plan.cut()
    meta["observed_fraction"] = observed_fraction(p.features, np.isfinite(x).sum(axis=(0, 1)), x.shape[0] * x.shape[1])
    return Windows(x, plan.index), meta


# Windows cut at once while writing: about 64 MB of 90 x 12 values; what the stage holds besides the frames.
CUT_BATCH = 16384


def write(plan: Plan, meta: dict, out_dir: Path) -> None:
    """Cut the windows batch by batch, in the file's order, and write them row group by row group."""
    from tqdm import tqdm

    n = len(plan.index)
    with WindowsWriter(out_dir, meta) as out:
        for a in tqdm(range(0, n, CUT_BATCH), desc="windows", unit="batch", disable=None, leave=False):
            out.write(plan.cut(slice(a, a + CUT_BATCH)), plan.index.iloc[a : a + CUT_BATCH])
        meta["observed_fraction"] = observed_fraction(meta["features"], out.finite, n * int(meta["window"]))


def check_task(params: Params) -> None:
    """The drowsiness task needs the drowsiness features: minutes of blinks and closures do not fit in
    one window's frames, the trailing features carry them (README "Tasks")."""
    from pipeline.contracts.features import DROWSINESS

    if params.data.task == "drowsiness" and not set(params.windows.features) & set(DROWSINESS):
        raise ConfigError(
            f"params key 'data.task' is drowsiness, but 'windows.features' holds none of the drowsiness features "
            f'{sorted(DROWSINESS)}; add them (README "Tasks" has a ready windows section)'
        )


def run(params: Params, features_path: Path, out_dir: Path) -> dict:
    """features.parquet -> windows/windows.parquet + meta.json."""
    check_task(params)
    plan, meta = plan_folds(read_features(features_path), params.windows, params.data.classes, params.data.task)
    write(plan, meta, out_dir)
    c = meta["counts"]
    log.info(
        "windows: kept %d of %d (dropped: %d mixed labels, %d low face presence, %d unlabelled)",
        c["kept"],
        c["candidates"],
        c["dropped_mixed"],
        c["dropped_low_face"],
        c["dropped_unlabelled"],
    )
    return {"kept": c["kept"], "subjects": len(plan.index["subject"].unique()), "folds": meta["folds"]}


def main(
    params: ParamsOpt = Path("params.yaml"),
    features_path: FeaturesPath = Path("data/features.parquet"),
    out: Path = Path("data/windows"),
) -> None:
    """Fixed-length windows, each subject in one cross-validation fold."""
    run_stage(lambda: run(load_params(params), features_path, out))
