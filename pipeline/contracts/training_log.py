"""The training-log contract: ``reports/models/<model>/training/``, per-epoch curves written with
dvclive (DVC's own logger), so ``dvc plots diff`` and ``dvc exp show`` compare training across
revisions and experiments.

Layout (dvclive's): ``plots/metrics/<run>/<metric>.tsv`` with columns ``step`` (the epoch, from 0)
and the metric, for ``<run>`` = ``fold0`` ... ``fold<k-1>`` (each cross-validation fold's model)
and ``final`` (the model trained on all subjects), metrics ``train_loss``, ``train_f1``,
``val_loss``, ``val_f1`` (folds only) and ``lr``; ``metrics.json`` holds each run's last epoch.
No timestamps: the same data and params give the same bytes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

DIR = "training"
METRICS = ("train_loss", "train_f1", "val_loss", "val_f1", "lr")


def _logger(path: Path):
    """dvclive's file writer without its repository side: no experiment tracking (it failed in a git
    repo without commits), no DVC Studio posts (nothing goes over the network at run time)."""
    from dvclive import Live

    class FileLive(Live):
        def _init_dvc(self) -> None:
            pass

        def _init_studio(self) -> None:
            self._studio_events_to_skip.update({"start", "data", "done"})

    return FileLive(str(path), save_dvc_exp=False, dvcyaml=None, report=None)


def write_training_log(out_dir: Path, runs: dict[str, list[dict]]) -> Path:
    """``runs``: run name (``fold0``, ..., ``final``) -> one dict per epoch. Written into a temporary
    folder beside ``out_dir / DIR`` and renamed over it, so a killed run leaves the old log whole."""
    target = Path(out_dir) / DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DIR}.", suffix=".tmp", dir=target.parent))
    try:
        with _logger(tmp) as live:
            for epoch in range(max((len(h) for h in runs.values()), default=0)):
                for run, history in runs.items():
                    if epoch < len(history):
                        for k in METRICS:
                            v = history[epoch].get(k)
                            if v is not None and not math.isnan(v):
                                live.log_metric(f"{run}/{k}", round(float(v), 6))
                live.next_step()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_training_log(out_dir: Path) -> pd.DataFrame:
    """One row per run and epoch: ``run``, ``epoch`` (from 1), then the metrics logged for that run."""
    root = Path(out_dir) / DIR / "plots" / "metrics"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no training log (run `dvc repro` for this model)")
    frames = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        per_metric = [pd.read_csv(f, sep="\t").set_index("step")[f.stem] for f in sorted(run_dir.glob("*.tsv"))]
        df = pd.concat(per_metric, axis=1).reset_index()
        df.insert(0, "run", run_dir.name)
        frames.append(df.rename(columns={"step": "epoch"}).assign(epoch=lambda d: d["epoch"] + 1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "epoch"])
