"""`train` stage: cross-validate one model of the registry by subject, then train it on everyone.

Writes ``models/<name>/``: the trained-model contract ``config.json`` + weights of the
final model (all subjects, ``median best epoch`` of the folds; its z-score normalisation is
in the card), ``oof.parquet`` (every window's out-of-fold class probabilities,
pipeline/contracts/predictions.py) and ``folds.json`` (per fold: subjects, best epoch,
train/val/test macro-F1). ``reports/models/<name>/training/`` holds the per-epoch curves of
every fold and of the final model, logged with dvclive (pipeline/contracts/training_log.py; no
timings, so it too repeats byte for byte). Training runs with pinned CPU numerics
(pipeline/modeling/numerics.py): the same data and params give the same bytes on any
x86-64 CPU, whatever ``train.workers``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from pipeline.contracts.model import ModelCard, inputs_of, write_card, write_weights
from pipeline.contracts.predictions import write_oof
from pipeline.contracts.training_log import write_training_log
from pipeline.core.config import Params, load_params, resolve_workers
from pipeline.core.errors import ModelError
from pipeline.core.files import write_json
from pipeline.core.parallel import dask_address
from pipeline.core.runtime import ModelName, ModelsDir, ParamsOpt, ReportsDir, WindowsDir, run_stage
from pipeline.modeling import numerics, registry

log = logging.getLogger(__name__)


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Cross-validate ``name`` on the windows; write the final model, its OOF predictions and logs."""
    from pipeline.modeling.base import macro_f1
    from pipeline.modeling.crossval import cross_validate

    registry.check(params, only=name)  # all models' hparams are checked first, by the check stage
    if name not in params.train.models:
        raise ModelError(f"model '{name}' is not in params train.models {list(params.train.models)}; add it there")
    hparams = dict(params.hparams.get(name, {}))
    workers = resolve_workers(params.train.workers)
    log.info("train %s: subject-grouped cross-validation, %s", name, hparams or "default hparams")
    t0 = time.perf_counter()
    address = dask_address(params.parallel.dask_address)
    if address:
        log.info("train %s: folds and final fit on the Dask cluster at %s", name, address)
    cv = cross_validate(name, hparams, windows_dir, params.train, workers, address)
    seconds = time.perf_counter() - t0
    meta, index = cv.meta, cv.index
    y = index["label"].map({c: i for i, c in enumerate(meta["classes"])}).to_numpy()
    folds = cv.fold_summary(y)
    for f in folds:
        log.info(
            "  fold %d (%d subjects, %d windows): best epoch %d, train %.3f, val %.3f, test %.3f",
            f["fold"],
            len(f["subjects"]),
            f["windows"],
            f["best_epoch"],
            f["train_f1"],
            f["val_f1"],
            f["test_f1"],
        )
        if "seeds" in f:
            seeds = ", ".join(f"{v:.3f}" for v in f["seeds"]["val_f1"])
            log.info("    seeds' validation macro-F1 %s: kept seed %d (the median)", seeds, f["seeds"]["kept"])
        if "tuning" in f:
            t = f["tuning"]
            log.info(
                "    tuned inside the fold on inner folds %s (%d fits): %s, inner macro-F1 %.3f",
                t["inner_folds"],
                t["fits"],
                t["hparams"],
                t["inner_f1"][t["chosen"]],
            )
    known = cv.familiarity
    log.info(
        "  unfamiliar input: distance above %.2f (%.1f%% of %s windows)",
        known["cutoff"],
        100 * known["oof_flagged"],
        known["calibrated_on"],
    )
    final_hparams = cv.final.hparams  # with a grid (hparams.<name>.tune): the folds' most frequent choice
    tuned = tuning_summary(hparams, folds, final_hparams)
    if tuned:
        log.info("  tuned %s: final model %s (%d fits)", tuned["grid"], tuned["final"], tuned["fits"])
    model = registry.create(name, len(meta["features"]), len(meta["classes"]), int(meta["window"]), final_hparams)
    card = ModelCard.for_windows(name, meta, final_hparams, model.weights_file)
    norm = {"subject_baseline": meta["normalisation"]["subject_baseline"], **cv.final.normaliser.as_dict()}
    card = dataclasses.replace(
        card,
        parameters=cv.final.n_parameters,
        normalisation=norm,
        epochs=cv.final.best_epoch,
        inputs=inputs_of(params),
        familiarity=cv.familiarity,
    )
    out = models_dir / name
    write_weights(out, model.weights_file, cv.final.state)
    write_card(out, card)
    write_oof(out / "oof.parquet", index, cv.oof, list(meta["classes"]))
    final = {"epochs": cv.final.best_epoch} | ({"hparams": tuned["final"]} if tuned else {})
    write_json(out / "folds.json", {"folds": folds, "final": final} | ({"tuning": tuned} if tuned else {}))
    write_training_log(reports_dir / name, {f"fold{r.fold}": r.history for r in cv.folds} | {"final": cv.final.history})
    oof_f1 = macro_f1(y, cv.oof.argmax(1), len(meta["classes"]))
    return {
        "model": name,
        "folds": len(folds),
        "cv_f1": round(oof_f1, 4),
        "final_epochs": cv.final.best_epoch,
        "workers": workers,
        "seconds": round(seconds, 1),
    }


def tuning_summary(hparams: dict, folds: list[dict], final: dict) -> dict:
    """What was tuned and what it cost, for folds.json and the report (empty without a grid)."""
    from pipeline.modeling.tuning import TUNE_KEY, changed

    tuned = [f["tuning"] for f in folds if "tuning" in f]
    if not tuned:
        return {}
    return {
        "grid": hparams[TUNE_KEY],
        "candidates": len(tuned[0]["inner_f1"]),
        "inner_folds": len(tuned[0]["inner_folds"]),
        "per_fold": [t["hparams"] for t in tuned],
        "final": changed(final, hparams),
        "fits": sum(t["fits"] for t in tuned),  # extra fits beyond the folds' and the final one
    }


def main(
    model: ModelName,
    params: ParamsOpt = Path("params.yaml"),
    windows_dir: WindowsDir = Path("data/windows"),
    models_dir: ModelsDir = Path("models"),
    reports_dir: ReportsDir = Path("reports/models"),
) -> None:
    """Cross-validate one model of the registry by subject; train the final model on all subjects."""

    def work() -> dict:
        p = load_params(params)
        numerics.pin(p.train.threads, torch=registry.get(model).neural)
        return run(p, model, windows_dir, models_dir, reports_dir)

    run_stage(work)
