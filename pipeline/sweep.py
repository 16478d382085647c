"""Window-size sweep: one DVC experiment per `windows.size`, then one table of macro-F1.

    python -m pipeline.cli sweep --sizes 30 60 90 120      (or: make sweep)

Each size is queued as a DVC experiment (``dvc exp run --queue -S windows.size=N
--name window-N``), the queue runs (``dvc exp run --run-all``: each experiment in its
own temporary copy, stages that did not change come from the DVC cache), then every
experiment is applied in turn (``dvc exp apply window-N``) and the macro-F1 of every
model is read from ``reports/models/*/metrics.json``. The experiments stay listed in
``dvc exp show``; the workspace is left on the last one: ``dvc exp apply`` another, or
``git checkout params.yaml dvc.lock reports && dvc checkout`` to return to the commit.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from pipeline.core.runtime import dvc_command, tool_env


def collect(reports_dir: Path, size: int) -> list[dict]:
    """One row per model of the current workspace's metrics."""
    rows = []
    for f in sorted((reports_dir / "models").glob("*/metrics.json")):
        m = json.loads(f.read_text())
        rows.append(
            {
                "model": f.parent.name,
                "window": size,
                "cv_f1": m["cv"]["macro_f1"],
                "cv_lo": m["cv"]["interval"]["macro_f1"]["lo"],
                "cv_hi": m["cv"]["interval"]["macro_f1"]["hi"],
                "gap": m["gap"],
            }
        )
    return rows


def table(rows: list[dict], value: str = "cv_f1") -> pd.DataFrame:
    """Models x window sizes, best model first."""
    t = pd.DataFrame(rows).pivot(index="model", columns="window", values=value)
    return t.loc[t.mean(axis=1).sort_values(ascending=False).index].round(3)


def run(sizes: list[int], reports_dir: Path = Path("reports")) -> pd.DataFrame:
    def dvc(*args: str) -> None:
        print("+ dvc", " ".join(args), flush=True)
        subprocess.run(dvc_command(*args), check=True, env=tool_env())

    for size in sizes:
        dvc("exp", "run", "--queue", "-S", f"windows.size={size}", "--name", f"window-{size}")
    dvc("exp", "run", "--run-all", "--jobs", "1")
    rows = []
    for size in sizes:
        dvc("exp", "apply", f"window-{size}")
        rows += collect(reports_dir, size)
    t = table(rows)
    print("\ntest macro-F1 by model and window size (frames):")
    print(t.to_markdown())
    return t
