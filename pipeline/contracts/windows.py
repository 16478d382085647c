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
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, read_json, write_json

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


# --- window values that need not fit in memory ------------------------------------------------
# Windows a pass over a whole set reads at once (z-score fits, statistics, scoring): ~4 MB at 90 x 12.
READ_BATCH = 1024


class WindowValues:
    """Window values (N, T, F) float32 in a raw file (C order), read on demand: ``values[a:b]`` or
    ``values[rows]`` (any order, repeats allowed) returns just those windows as an array, so a
    process holds what it asked for, not the data set. Not memory-mapped: the pages read are not
    kept in the process (its resident memory stays that of its batches)."""

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        self.path, self.shape = Path(path), tuple(int(v) for v in shape)
        self.ndim, self.dtype = 3, np.dtype(np.float32)
        self._row = 4 * self.shape[1] * self.shape[2]
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:  # to another process: the path, not the open file
        return {**self.__dict__, "_fd": None}

    def _read(self, first: int, count: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        size = count * self._row
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:  # pread may return less than asked
            n = os.preadv(self._fd, [view[got:]], first * self._row + got)
            if n == 0:
                raise OSError(f"{self.path} ended early: {got} of {size} bytes at window {first}")
            got += n
        return np.frombuffer(buf, np.float32).reshape(count, *self.shape[1:])

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step == 1:
                return self._read(a, max(0, b - a))
            key = np.arange(a, b, step)
        rows = np.asarray(key)
        if rows.ndim == 0:
            k = int(rows)
            if not -n <= k < n:
                raise IndexError(f"window {k} outside 0..{n - 1}")
            return self._read(k % n, 1)[0]
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = np.where(rows < 0, rows + n, rows).astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"window rows outside 0..{n - 1}")
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        order = np.argsort(rows, kind="stable")
        r = rows[order]
        cuts = np.flatnonzero(np.diff(r) != 1) + 1  # runs of consecutive rows: one read each
        for a, b in itertools.pairwise([0, *cuts.tolist(), len(r)]):
            out[order[a:b]] = self._read(int(r[a]), b - a)
        return out

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


class Rows:
    """Rows ``rows`` of windows ``x`` (an array or :class:`WindowValues`), z-scored by ``norm`` when
    read: indexing reads and normalises just the windows asked for. What models train and score on,
    so a training side is never copied whole."""

    def __init__(self, x: Values, rows: np.ndarray, norm: Normaliser | None = None) -> None:
        self.x, self.rows, self.norm = x, np.asarray(rows, np.int64), norm
        self.shape = (len(self.rows), *x.shape[1:])
        self.ndim, self.dtype = 3, np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        rows = self.rows[key]
        if np.ndim(rows) == 0:
            k = int(key) % len(self)
            return self[k : k + 1][0]
        if isinstance(key, slice) and len(rows) and rows[-1] - rows[0] == len(rows) - 1:
            v = self.x[int(rows[0]) : int(rows[-1]) + 1]  # contiguous: one read
        else:
            v = self.x[rows]
        return self.norm.apply(v) if self.norm is not None else np.asarray(v, np.float32)


Values = np.ndarray | WindowValues | Rows  # anything with len, shape and row indexing


def batches(x: Values, size: int | None = None) -> Iterator[np.ndarray]:
    """``x`` in consecutive batches of ``size`` (READ_BATCH) windows, each an array."""
    size = size or READ_BATCH
    for i in range(0, len(x), size):
        yield np.asarray(x[i : i + size])


def map_batches(fn: Callable[[np.ndarray], np.ndarray], x: Values, size: int | None = None) -> np.ndarray:
    """``fn`` (one output row per window) over ``x`` batch by batch, the rows concatenated: for
    per-window functions, the same values as ``fn(x)`` on the whole, in memory for one batch."""
    size = size or READ_BATCH
    if isinstance(x, np.ndarray) and len(x) <= size:
        return fn(x)
    parts = [fn(b) for b in batches(x, size)]
    return np.concatenate(parts) if parts else fn(np.zeros((0, *x.shape[1:]), np.float32))


@dataclass(frozen=True)
class Normaliser:
    """Per-feature z-score fitted on training windows; NaN (not observed) becomes 0, the training mean."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, x: Values) -> Normaliser:
        """Mean and standard deviation of every feature over all steps of ``x`` (N, T, F), NaN left
        out: numpy's ``nanmean`` / ``nanstd`` (float64) to the byte, computed ``READ_BATCH`` windows
        at a time in two passes (memory for a batch; sums in row order, as numpy's own reduction)."""
        f = x.shape[-1]
        count, total = np.zeros(f, np.int64), np.zeros(f)
        for chunk in batches(x):
            flat = chunk.reshape(-1, f)
            ok = ~np.isnan(flat)
            count += ok.sum(0)
            total = np.concatenate([total[None], np.where(ok, flat, 0).astype(np.float64)]).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):  # a feature never observed: mean of nothing
            mean = total / count
        squares = np.zeros(f)
        for chunk in batches(x):
            d = chunk.reshape(-1, f).copy()
            ok = ~np.isnan(d)
            np.subtract(d, mean, out=d, casting="unsafe", where=ok)  # float32 deviations, as np.nanstd
            np.multiply(d, d, out=d, where=ok)
            d[~ok] = 0
            squares = np.concatenate([squares[None], d.astype(np.float64)]).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(squares / count)
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


# Values per Parquet row group of windows.parquet: what a writer buffers and a reader decodes at
# once, whatever the size of the data set. A constant: the file's bytes depend on it.
ROW_GROUP_BYTES = 64 << 20


def rows_per_group(t: int, f: int) -> int:
    """Windows per row group for windows of ``t`` steps x ``f`` features (about ROW_GROUP_BYTES)."""
    return max(1, ROW_GROUP_BYTES // (4 * t * f))


class WindowsWriter:
    """windows.parquet written row group by row group, in the order the windows are given, then
    meta.json (last: a reader never sees a half set). Memory: one row group, not the data set.

        with WindowsWriter(out_dir, meta) as w:
            for x, index in chunks:
                w.write(x, index)
        # meta.json (``w.meta``, updated by the caller meanwhile) is written on a clean exit
    """

    def __init__(self, out_dir: Path, meta: dict) -> None:
        self.out_dir, self.meta = Path(out_dir), meta
        self.t, self.f = int(meta["window"]), len(meta["features"])
        self.group = rows_per_group(self.t, self.f)
        self._x: list[np.ndarray] = []
        self._index: list[pd.DataFrame] = []
        self._held = 0
        self.rows = 0
        self.finite = np.zeros(self.f, np.int64)  # observed (finite) values per feature, for meta.json

    def __enter__(self) -> WindowsWriter:
        import pyarrow.parquet as pq

        self._pq = pq
        self._atomic = atomic_path(self.out_dir / FILE)
        self._tmp = self._atomic.__enter__()
        self._writer = None
        return self

    def write(self, x: np.ndarray, index: pd.DataFrame) -> None:
        if len(x) != len(index) or x.shape[1:] != (self.t, self.f):
            raise ValueError(f"windows {x.shape} and {len(index)} index rows do not match ({self.t}, {self.f})")
        self._x.append(x)
        self._index.append(index.reset_index(drop=True))
        self._held += len(x)
        self.finite += np.isfinite(x).sum(axis=(0, 1))
        while self._held >= self.group:
            self._flush(self.group)

    def _flush(self, n: int) -> None:
        x = np.concatenate(self._x) if len(self._x) > 1 else self._x[0]
        index = pd.concat(self._index, ignore_index=True) if len(self._index) > 1 else self._index[0]
        table = windows_table(x[:n], index.iloc[:n])
        small = {k: self.meta[k] for k in META_REQUIRED}
        table = table.replace_schema_metadata({b"windows": json.dumps(small).encode()})
        if self._writer is None:
            self._writer = self._pq.ParquetWriter(self._tmp, table.schema, compression="zstd", use_dictionary=True)
        self._writer.write_table(table, row_group_size=n)
        self.rows += n
        self._x, self._index = ([x[n:]], [index.iloc[n:].reset_index(drop=True)]) if n < len(x) else ([], [])
        self._held -= n

    def __exit__(self, kind, err, tb) -> None:
        try:
            if kind is None:
                if self._held or self._writer is None:  # the rest, or an empty set (a file with its schema)
                    if not self._x:
                        self._x, self._index = [np.zeros((0, self.t, self.f), np.float32)], [_EMPTY]
                    self._flush(self._held)
                self._writer.close()
            elif self._writer is not None:
                self._writer.close()
        finally:
            self._atomic.__exit__(kind, err, tb)
        if kind is None:
            write_json(self.out_dir / "meta.json", self.meta)


_EMPTY = pd.DataFrame({c: pd.Series(dtype=object) for c in INDEX_COLUMNS})


def write_windows(w: Windows, meta: dict, out_dir: Path) -> None:
    """Write windows held in memory (sorted by fold, video, start) and meta.json last."""
    order = w.index.sort_values(["fold", "video", "start_frame"], kind="stable").index.to_numpy()
    with WindowsWriter(out_dir, meta) as out:
        out.write(w.x[order], w.index.iloc[order].reset_index(drop=True))


def read_index(out_dir: Path) -> pd.DataFrame:
    """The index rows only (every column but the values ``x``): cheap, for reports."""
    import pyarrow.parquet as pq

    path = Path(out_dir) / FILE
    names = pq.read_schema(path).names
    return pq.read_table(path, columns=[c for c in names if c != "x"]).to_pandas()


def _check_index(index: pd.DataFrame, meta: dict, path: Path) -> np.ndarray:
    """Labels and folds of the index against meta.json; returns y (N,) class indices."""
    unknown = sorted(set(index["label"]) - set(meta["classes"]))
    if unknown:
        raise DataError(f"{path} has labels {unknown} not in meta.json classes; rerun the windows stage")
    k = int(meta["folds"])
    folds = index["fold"].to_numpy()
    if len(folds) and (folds.min() < 0 or folds.max() >= k):
        raise DataError(f"{path} has fold numbers outside 0..{k - 1} (meta.json folds); rerun the windows stage")
    return index["label"].map({c: i for i, c in enumerate(meta["classes"])}).to_numpy(np.int64)


def _x_batches(path: Path, t: int, f: int) -> Iterator[np.ndarray]:
    """The values of windows.parquet, one row group at a time: (rows, t, f) float32."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        if pf.schema_arrow.field("x").type.list_size != t * f:
            raise DataError(
                f"{path}: column x holds {pf.schema_arrow.field('x').type.list_size} values per window, "
                f"meta.json says window x features = {t} x {f}; rerun the windows stage"
            )
        for i in range(pf.num_row_groups):
            col = pf.read_row_group(i, columns=["x"]).column("x").combine_chunks()
            yield col.values.to_numpy(zero_copy_only=False).reshape(len(col), t, f)


def read_windows(out_dir: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """Read the windows into memory: x (N, T, F) float32 as stored (not z-scored), y (N,) class
    indices, the index rows, and meta. Everything (features, classes, window length, folds) comes
    from the data itself. For sets larger than memory: :func:`open_windows`."""
    meta = read_meta(out_dir)
    path = Path(out_dir) / FILE
    index = read_index(out_dir)
    y = _check_index(index, meta, path)
    t, f = int(meta["window"]), len(meta["features"])
    parts = list(_x_batches(path, t, f))
    x = np.concatenate(parts) if len(parts) != 1 else parts[0]
    return x, y, index, meta


class ParquetValues:
    """The values of windows.parquet read straight from the file, for a sample of windows: indexing
    decodes only the row groups that hold the windows asked for (no copy of the set anywhere)."""

    def __init__(self, path: Path, shape: tuple[int, int, int]) -> None:
        import pyarrow.parquet as pq

        self.path, self.shape = Path(path), tuple(int(v) for v in shape)
        self.ndim, self.dtype = 3, np.dtype(np.float32)
        with pq.ParquetFile(self.path) as pf:
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        self._bounds = np.r_[0, np.cumsum(sizes, dtype=np.int64)]

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        import pyarrow.parquet as pq

        rows = np.arange(self.shape[0])[key]
        if np.ndim(rows) == 0:
            return self[[int(rows)]][0]
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        group = np.searchsorted(self._bounds, rows, side="right") - 1
        with pq.ParquetFile(self.path) as pf:
            for g in np.unique(group):
                col = pf.read_row_group(int(g), columns=["x"]).column("x").combine_chunks()
                x = col.values.to_numpy(zero_copy_only=False).reshape(len(col), *self.shape[1:])
                mine = group == g
                out[mine] = x[rows[mine] - self._bounds[g]]
        return out


def sample_windows(out_dir: Path) -> tuple[ParquetValues, np.ndarray, pd.DataFrame, dict]:
    """As :func:`read_windows`, for reading a few windows: x reads the ones asked for from the file."""
    meta = read_meta(out_dir)
    path = Path(out_dir) / FILE
    index = read_index(out_dir)
    y = _check_index(index, meta, path)
    return ParquetValues(path, (len(index), int(meta["window"]), len(meta["features"]))), y, index, meta


SCRATCH_PREFIX = "driver-pipeline-windows-"


def _scratch_dir() -> Path:
    """This process's folder for window values (in TMPDIR), removed when it exits; folders left by a
    process that no longer runs (killed) are removed first."""
    import atexit
    import shutil
    import tempfile

    root = Path(tempfile.gettempdir())
    for old in root.glob(SCRATCH_PREFIX + "*"):
        pid = old.name.removeprefix(SCRATCH_PREFIX)
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    here = root / f"{SCRATCH_PREFIX}{os.getpid()}"
    if not here.exists():
        here.mkdir(mode=0o700)
        atexit.register(shutil.rmtree, here, ignore_errors=True)
    return here


def _raw_copy(path: Path, shape: tuple[int, int, int]) -> Path:
    """The values of windows.parquet written raw to this process's scratch folder, row group by row
    group. No room there is the machine's problem, said with what to do."""
    import errno
    import hashlib
    import tempfile

    from pipeline.core.errors import MachineError

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    try:
        values = _scratch_dir() / f"{key}.f32"
        with atomic_path(values) as tmp, open(tmp, "wb") as out:
            for x in _x_batches(path, shape[1], shape[2]):
                out.write(np.ascontiguousarray(x, np.float32).tobytes())
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        need = 4 * int(np.prod(shape)) / 1e9
        raise MachineError(
            f"no space left on the device for the raw copy of the windows ({need:.2f} GB) in "
            f"{tempfile.gettempdir()} ({e}); set TMPDIR to a folder on a disk with room and run again; "
            "nothing of this run was recorded as done"
        ) from e
    return values


def open_windows(out_dir: Path, values: Path | None = None) -> tuple[WindowValues, np.ndarray, pd.DataFrame, dict]:
    """The windows without holding their values: as :func:`read_windows`, but x is a
    :class:`WindowValues` over a raw copy of the values written row group by row group to this
    process's scratch folder in TMPDIR (4 bytes per value: 1,000 hours of 90 x 12 windows at stride
    10 need about 23 GB there). ``values``: such a copy another process made of the same windows
    (training workers read their parent's)."""
    meta = read_meta(out_dir)
    path = Path(out_dir) / FILE
    index = read_index(out_dir)
    y = _check_index(index, meta, path)
    shape = (len(index), int(meta["window"]), len(meta["features"]))
    if values is None:
        values = _raw_copy(path, shape)
    size = Path(values).stat().st_size
    if size != 4 * int(np.prod(shape)):
        raise DataError(f"{values} holds {size} bytes, not the {shape} windows of {path}: rerun")
    return WindowValues(values, shape), y, index, meta


def count_inf(out_dir: Path) -> np.ndarray:
    """Infinite values per window (N,), reading one row group at a time (any values per window)."""
    import pyarrow.parquet as pq

    parts = []
    with pq.ParquetFile(Path(out_dir) / FILE) as pf:
        for i in range(pf.num_row_groups):
            col = pf.read_row_group(i, columns=["x"]).column("x").combine_chunks()
            parts.append(np.isinf(col.values.to_numpy(zero_copy_only=False)).reshape(len(col), -1).sum(1))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
