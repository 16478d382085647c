"""The out-of-fold predictions contract: ``models/<name>/oof.parquet``.

One row per window of the windows set, scored by the fold model that never saw the
window's subject (not in training, not in early stopping): ``window_id, video, subject,
label, fold, start_t, end_t`` and ``proba`` (a fixed-size list of class probabilities in
the order of the schema's ``classes``). Pooled over folds, these are what the evaluate
and report stages score, bootstrap and compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import DataError
from pipeline.core.files import write_table

FILE = "oof.parquet"
COLUMNS = ("window_id", "video", "subject", "label", "fold", "start_t", "end_t")


def write_oof(path: Path, index: pd.DataFrame, proba: np.ndarray, classes: list[str]) -> None:
    """``index`` (the windows' index rows) and their out-of-fold probabilities (N, C)."""
    import pyarrow as pa

    text = ("video", "subject", "label")
    cols = {c: pa.array(index[c].astype(str).to_numpy() if c in text else index[c].to_numpy()) for c in COLUMNS}
    cols["proba"] = pa.FixedSizeListArray.from_arrays(pa.array(proba.astype(np.float32).reshape(-1)), len(classes))
    table = pa.table(cols).replace_schema_metadata({b"classes": json.dumps(list(classes)).encode()})
    write_table(table, path)


def read_oof(path: Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, list[str]]:
    """(y class indices, proba (N, C), index rows, classes) of one model's out-of-fold predictions."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} not found: train the model first (dvc repro train@{path.parent.name})")
    table = pq.read_table(path)
    classes = json.loads(table.schema.metadata[b"classes"])
    col = table.column("proba").combine_chunks()
    proba = col.values.to_numpy(zero_copy_only=False).reshape(len(col), len(classes)).astype(np.float64)
    index = table.drop(["proba"]).to_pandas()
    unknown = sorted(set(index["label"]) - set(classes))
    if unknown:
        raise DataError(f"{path} has labels {unknown} not among its classes {classes}; retrain the model")
    y = index["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return y, proba, index, classes
