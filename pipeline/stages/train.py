"""`train` stage: fit one model of the registry (zoo or baseline) on the windows, select on validation.

Writes the trained-model contract ``models/<name>/{config.json, weights}``
(pipeline/contracts/model.py) and a per-epoch log ``reports/models/<name>/train_log.csv``
(epoch, train/val loss and macro-F1, lr; no timings, so it too repeats byte for byte).
Training runs with pinned CPU numerics (pipeline/modeling/numerics.py), so the same data
and params give the same bytes on any x86-64 CPU; the training time goes to the log only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import pandas as pd

from pipeline.contracts.model import ModelCard, write_card, write_weights
from pipeline.contracts.windows import load_split
from pipeline.core.config import Params, load_params
from pipeline.core.errors import ModelError
from pipeline.core.files import atomic_path
from pipeline.core.runtime import ModelName, ModelsDir, ParamsOpt, ReportsDir, WindowsDir, run_stage
from pipeline.modeling import numerics, registry

log = logging.getLogger(__name__)


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Train ``name`` on the windows; write the model and its per-epoch log."""
    registry.check(params, only=name)  # all models' hparams are checked first, by the check stage
    if name not in params.train.models:
        raise ModelError(f"model '{name}' is not in params train.models {list(params.train.models)}; add it there")
    (xtr, ytr, _, meta), (xva, yva, _, _) = (load_split(windows_dir, sp) for sp in ("train", "val"))
    hparams = dict(params.hparams.get(name, {}))
    n_classes = len(meta["classes"])
    log.info("train %s on %d windows (val %d), %s", name, len(ytr), len(yva), hparams or "default hparams")
    model = registry.create(name, xtr.shape[2], n_classes, xtr.shape[1], hparams, seed=params.train.seed)
    t0 = time.perf_counter()
    history = model.fit((xtr, ytr), (xva, yva), n_classes, params.train)
    seconds = time.perf_counter() - t0
    card = ModelCard.for_windows(name, meta, hparams, model.weights_file)
    card = dataclasses.replace(card, parameters=model.n_parameters())
    out = models_dir / name
    write_weights(out, model.weights_file, model.state_bytes())
    write_card(out, card)
    (reports_dir / name).mkdir(parents=True, exist_ok=True)
    with atomic_path(reports_dir / name / "train_log.csv") as tmp:
        pd.DataFrame(history).round(6).to_csv(tmp, index=False)
    best = max(h["val_f1"] for h in history)
    return {"model": name, "epochs": len(history), "best_val_f1": round(best, 4), "seconds": round(seconds, 1)}


def main(
    model: ModelName,
    params: ParamsOpt = Path("params.yaml"),
    windows_dir: WindowsDir = Path("data/windows"),
    models_dir: ModelsDir = Path("models"),
    reports_dir: ReportsDir = Path("reports/models"),
) -> None:
    """Train one model of the registry on the windows."""

    def work() -> dict:
        p = load_params(params)
        numerics.pin(p.train.threads)
        return run(p, model, windows_dir, models_dir, reports_dir)

    run_stage(work)
