"""The windows contract (generic: any multivariate sequence data set written in it trains and
evaluates without code changes; README "The windows format").

* ``<dir>/{train,val,test}.parquet``: one row per window with ``window_id, video,
  subject, label, split, start_frame, end_frame, start_t, end_t`` and ``x``, a
  fixed-size list of ``window * n_features`` float32 values, time-major (``x`` reshaped
  to ``(window, n_features)`` is the window). No NaN.
* ``<dir>/meta.json``: ``format``, ``features`` (names, in column order of ``x``),
  ``classes`` (label order), ``window``, plus provenance: normalisation, counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.files import read_json, write_json, write_table

FORMAT = "driver-windows/1"
SPLITS = ("train", "val", "test")
INDEX_COLUMNS = ("window_id", "video", "subject", "label", "split", "start_frame", "end_frame", "start_t", "end_t")


@dataclass
class Windows:
    """Windows in memory: values (N, T, F) and one index row per window."""

    x: np.ndarray
    index: pd.DataFrame


def read_meta(out_dir: Path) -> dict:
    path = Path(out_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"{path} not found: run the windows stage first (dvc repro windows)")
    return read_json(path)


def windows_table(x: np.ndarray, index: pd.DataFrame):
    """One split as a pyarrow Table in the windows format."""
    import pyarrow as pa

    _, t, f = x.shape
    cols = {c: pa.array(index[c].to_numpy()) for c in INDEX_COLUMNS}
    cols["x"] = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), t * f)
    return pa.table(cols)


def write_windows(w: Windows, meta: dict, out_dir: Path) -> None:
    """Write the three splits and meta.json (meta last: a reader never sees a half set)."""
    order = w.index.sort_values(["split", "video", "start_frame"], kind="stable").index.to_numpy()
    for sp in SPLITS:
        rows = order[(w.index["split"].to_numpy()[order] == sp)]
        table = windows_table(w.x[rows], w.index.iloc[rows].reset_index(drop=True))
        small = {k: meta[k] for k in ("format", "features", "classes", "window")}
        table = table.replace_schema_metadata({b"windows": json.dumps(small).encode()})
        write_table(table, out_dir / f"{sp}.parquet")
    write_json(out_dir / "meta.json", meta)


def load_split(out_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, dict]:
    """Read one split: x (N, T, F) float32, y (N,) class indices, the index rows, and meta.

    Everything (features, classes, window length) comes from the data itself.
    """
    import pyarrow.parquet as pq

    meta = read_meta(out_dir)
    table = pq.read_table(Path(out_dir) / f"{split}.parquet")
    t, f = int(meta["window"]), len(meta["features"])
    col = table.column("x").combine_chunks()
    x = col.values.to_numpy(zero_copy_only=False).reshape(len(col), t, f)
    index = table.drop(["x"]).to_pandas()
    unknown = sorted(set(index["label"]) - set(meta["classes"]))
    if unknown:
        raise DataError(
            f"{out_dir}/{split}.parquet has labels {unknown} not in meta.json classes; rerun the windows stage"
        )
    y = index["label"].map({c: i for i, c in enumerate(meta["classes"])}).to_numpy(np.int64)
    return x, y, index, meta
