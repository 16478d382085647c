"""Window-size sweep: one DVC experiment per `windows.size`, then one table of macro-F1.

    python -m pipeline.cli sweep --sizes 30 60 90 120      (or: make sweep)

Each size runs ``dvc exp run -S windows.size=N`` (a real, reproducible experiment you
can list with ``dvc exp show`` and restore with ``dvc exp apply``); after each run the
test (and val) macro-F1 of every model is read from ``reports/models/*/metrics.json``.
The workspace is left on the last experiment: ``dvc exp apply`` another, or
``git checkout params.yaml dvc.lock && dvc checkout`` to return to the committed state.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd


def collect(reports_dir: Path, size: int) -> list[dict]:
    """One row per model of the current workspace's metrics."""
    rows = []
    for f in sorted((reports_dir / "models").glob("*/metrics.json")):
        m = json.loads(f.read_text())
        rows.append({"model": f.parent.name, "window": size, "test_f1": m["test"]["macro_f1"],
                     "val_f1": m["val"]["macro_f1"], "gap": m["gap"]})  # fmt: skip
    return rows


def table(rows: list[dict], value: str = "test_f1") -> pd.DataFrame:
    """Models x window sizes, best model first."""
    t = pd.DataFrame(rows).pivot(index="model", columns="window", values=value)
    return t.loc[t.mean(axis=1).sort_values(ascending=False).index].round(3)


def run(sizes: list[int], reports_dir: Path = Path("reports")) -> pd.DataFrame:
    rows = []
    for size in sizes:
        cmd = ["dvc", "exp", "run", "-S", f"windows.size={size}", "--name", f"window-{size}", "--force"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        rows += collect(reports_dir, size)
    t = table(rows)
    print("\ntest macro-F1 by model and window size (frames):")
    print(t.to_markdown() if hasattr(t, "to_markdown") else t.to_string())
    return t
