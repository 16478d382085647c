"""Small shared I/O helpers: atomic, deterministic writes and the stage manifests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
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
        # The name is chosen (and kept in ``tmp_path``) BEFORE the file exists, so a stop raised at
        # any point after its creation finds it in the ``finally``. Holding the signals is not enough
        # on its own: a stop delivered to another thread of the process (MediaPipe's, say) runs its
        # Python handler in this one at once, blocked or not.
        with _signals_deferred():
            while True:
                tmp_path = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix if keep_suffix else ''}"
                try:  # mode 0666 less the umask, as any output
                    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                    break
                except FileExistsError:
                    continue
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path is not None:
            with _signals_deferred():  # a stop signal arriving now is raised after the removal
                tmp_path.unlink(missing_ok=True)


TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")  # what atomic_path names its temp files


def clear_stale_temps(folder: str | Path) -> int:
    """Remove temp files of :func:`atomic_path`'s naming left in ``folder`` by a killed run (SIGKILL
    leaves no chance to clean up); call it when a stage starts on its own output folder. Returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.is_file() and TEMP_NAME.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


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
