"""Small shared I/O helpers: atomic, deterministic writes and the stage manifests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only on success.

    A process killed mid-write leaves at most a hidden ``.<name>.*.tmp`` file that no
    stage reads. ``keep_suffix`` appends the real suffix (for writers that pick a
    format from it, like OpenCV's VideoWriter).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path: Path | None = None
    try:
        # A stop signal is held while the file is created and named; its handler runs when the
        # signals are unblocked, which is inside this ``try``, so the file is always removed.
        with _signals_deferred():
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.name}.", dir=path.parent, suffix=".tmp" + (path.suffix if keep_suffix else "")
            )
            os.close(fd)
            tmp_path = Path(tmp)
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None:
            with _signals_deferred():  # a stop signal arriving now is raised after the removal
                tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (their Python handlers then run as usual)."""
    stop = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    except (AttributeError, OSError):  # not POSIX
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_json(path: str | Path, obj: Any) -> None:
    """Write sorted, indented JSON atomically (stable bytes for DVC)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return o.as_posix()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_parquet(df: pd.DataFrame, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``df`` as Parquet atomically; extra ``metadata`` goes into the schema."""
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): v.encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(meta)
    write_table(table, path)


def write_table(table: Any, path: str | Path) -> None:
    """Write a pyarrow Table atomically with fixed writer settings (byte-stable)."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=True)
