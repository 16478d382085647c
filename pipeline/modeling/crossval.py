"""Subject-grouped cross-validation of one registry model, folds in parallel processes.

For each fold ``f`` of the windows (pipeline/contracts/windows.py): fit a normaliser and
the model on the training folds, stop early on the inner validation fold (also from the
training side), and score fold ``f``'s own windows. The fold models' predictions pooled
are the out-of-fold predictions: every window scored exactly once by a model that never
saw its subject. Then a final model is trained the same way on all subjects for
``median(best epoch of the folds)`` epochs, without validation: the model that ships.

Folds run in a process pool (``train.workers``, each fit with ``train.threads`` threads).
Every fit is seeded and runs with pinned numerics, so the results are the same bytes
whether the folds run one after another or side by side.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.contracts.windows import FoldRows, Normaliser, Rows, WindowValues, fold_rows, open_windows

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.core.config import TrainParams

FINAL = -1  # the fold number of the final model (all subjects)


@dataclass(frozen=True)
class FitJob:
    """One fit: a fold (rows to train, validate, score) or the final model (``fold == FINAL``)."""

    model: str
    hparams: dict[str, Any]
    windows_dir: Path
    cfg: TrainParams
    rows: FoldRows
    stop_after: int | None = None
    values: Path | None = None  # the caller's raw copy of the window values (same machine), else made here


@dataclass
class FitResult:
    fold: int
    history: list[dict[str, Any]]
    best_epoch: int  # epochs the selected weights were trained for
    train_f1: float  # macro-F1 of the fitted model on its own training windows
    proba: np.ndarray  # (len(rows.test), C) on the fold's own windows (empty for the final model)
    normaliser: Normaliser
    state: bytes = b""  # weights (final model only)
    n_parameters: int = 0
    seed: int = 0  # the seed of the kept fit
    seed_val_f1: tuple[float, ...] = ()  # with train.seeds > 1: each seed's validation score, in seed order
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)  # the ones it trained with
    tuning: dict[str, Any] = dataclasses.field(default_factory=dict)  # with a grid: the choice inside the fold


_OPEN: dict[tuple, tuple[WindowValues, np.ndarray, pd.DataFrame, dict]] = {}


def _windows(windows_dir: Path, values: Path | None = None) -> tuple[WindowValues, np.ndarray, pd.DataFrame, dict]:
    """The windows, opened once per process and set (the file's path, size and time): the index in
    memory, the values read batch by batch from a raw copy (pipeline/contracts/windows.py
    open_windows; ``values``: a copy the caller made). Nothing big is pickled to a worker, nor held
    whole by one."""
    from pipeline.contracts.windows import FILE

    st = (Path(windows_dir) / FILE).stat()
    key = (Path(windows_dir).resolve(), st.st_size, st.st_mtime_ns)
    if key not in _OPEN:
        _OPEN.clear()
        _OPEN[key] = open_windows(windows_dir, values)
    return _OPEN[key]


def _inner_score(job: FitJob, hparams: dict[str, Any], rows: FoldRows) -> float:
    """Macro-F1 on ``rows.test`` of one fit of ``hparams`` on ``rows.train`` (stopped early on
    ``rows.val``; one seed): a candidate's score on one inner fold."""
    from pipeline.modeling import registry
    from pipeline.modeling.base import macro_f1

    x, y, _, meta = _windows(job.windows_dir, job.values)
    n_classes = len(meta["classes"])
    norm = Normaliser.fit(Rows(x, rows.train))
    model = registry.create(job.model, x.shape[2], n_classes, x.shape[1], hparams, seed=job.cfg.seed)
    model.fit((Rows(x, rows.train, norm), y[rows.train]), (Rows(x, rows.val, norm), y[rows.val]), n_classes, job.cfg)
    return macro_f1(y[rows.test], model.logits(Rows(x, rows.test, norm)).argmax(1), n_classes)


def tune(job: FitJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hyper-parameters outer fold ``job.rows`` trains with, chosen on inner folds of its training
    side (pipeline/modeling/tuning.py), and the record of the choice; the job's own without a grid."""
    from pipeline.modeling import tuning

    options = tuning.candidates(job.hparams, job.cfg.tune_budget, job.cfg.seed)
    if len(options) == 1 or job.rows.fold == FINAL:
        return options[0], {}
    _, _, index, _ = _windows(job.windows_dir, job.values)
    inner = tuning.inner_folds(job.rows, index["fold"].to_numpy(), job.cfg.tune_inner_folds)
    scores = [float(np.mean([_inner_score(job, hp, rows) for _, rows in inner])) for hp in options]
    best = tuning.choose(scores)
    record = {
        "chosen": best,
        "hparams": tuning.changed(options[best], job.hparams),
        "inner_folds": [g for g, _ in inner],
        "inner_f1": [round(v, 5) for v in scores],
        "fits": len(options) * len(inner),
    }
    return options[best], record


def fit(job: FitJob) -> FitResult:
    """Run one fit (in a worker process or in the caller's): with a grid, the hyper-parameters are
    chosen inside the fold first (:func:`tune`)."""
    from pipeline.modeling import numerics, registry
    from pipeline.modeling.base import macro_f1, selected_epoch, selection_key, softmax

    numerics.ensure_pinned(job.cfg.threads, torch=registry.get(job.model).neural)
    hparams, tuned = tune(job)
    x, y, _, meta = _windows(job.windows_dir, job.values)
    n_classes = len(meta["classes"])
    r = job.rows
    norm = Normaliser.fit(Rows(x, r.train))
    xtr, xva, xte = Rows(x, r.train, norm), Rows(x, r.val, norm), Rows(x, r.test, norm)
    n_epochs = min(job.cfg.epochs, job.stop_after) if job.stop_after else job.cfg.epochs
    seeds = job.cfg.seeds if registry.get(job.model).neural and len(r.val) else 1
    runs = []
    for k in range(seeds):  # one fit per seed; the median by validation score is kept (ties: lower seed)
        cfg = dataclasses.replace(job.cfg, seed=job.cfg.seed + k)
        model = registry.create(job.model, x.shape[2], n_classes, x.shape[1], hparams, seed=cfg.seed)
        history = model.fit((xtr, y[r.train]), (xva, y[r.val]), n_classes, cfg, stop_after=job.stop_after)
        best = selected_epoch(history, cfg.smooth_epochs, cfg.min_epochs, max(n_epochs, len(history)))
        key = selection_key(history, best - 1, cfg.smooth_epochs) if seeds > 1 else (0.0, 0.0)
        runs.append((key, -k, model, history, best))
    ranked = sorted(runs, key=lambda run: run[:2])
    _, neg_k, model, history, best = ranked[(len(ranked) - 1) // 2]
    seed_val_f1 = tuple(round(run[0][0], 5) for run in runs) if seeds > 1 else ()
    train_f1 = macro_f1(y[r.train], model.logits(xtr).argmax(1), n_classes)
    proba = softmax(model.logits(xte)) if len(xte) else np.zeros((0, n_classes))
    final = r.fold == FINAL
    return FitResult(
        r.fold,
        history,
        int(best),
        train_f1,
        proba,
        norm,
        model.state_bytes() if final else b"",
        model.n_parameters(),
        job.cfg.seed - neg_k,
        seed_val_f1,
        hparams,
        tuned,
    )


@dataclass
class CrossValidation:
    """What :func:`cross_validate` returns: out-of-fold probabilities and the final model."""

    folds: list[FitResult]
    oof: np.ndarray  # (N, C) aligned with the windows' rows
    final: FitResult
    index: pd.DataFrame
    meta: dict
    familiarity: dict[str, Any]  # the unfamiliar-input score, cut-off calibrated out of fold (familiarity.py)

    def fold_summary(self, y: np.ndarray) -> list[dict[str, Any]]:
        from pipeline.modeling.base import macro_f1

        n_classes = len(self.meta["classes"])
        folds = self.index["fold"].to_numpy()
        k = int(self.meta["folds"])

        def subjects(mask: np.ndarray) -> list[str]:
            return sorted(self.index.loc[mask, "subject"].astype(str).unique())

        out = []
        for r in self.folds:
            rows = folds == r.fold
            val = folds == (r.fold + 1) % k
            out.append(
                {
                    "fold": r.fold,
                    "subjects": subjects(rows),
                    "val_subjects": subjects(val),
                    "train_subjects": subjects(~rows & ~val),
                    "windows": int(rows.sum()),
                    "best_epoch": r.best_epoch,
                    "train_f1": round(r.train_f1, 5),
                    "val_f1": round(r.history[r.best_epoch - 1].get("val_f1", float("nan")), 5),  # kept epoch
                    "test_f1": round(macro_f1(y[rows], self.oof[rows].argmax(1), n_classes), 5),
                }
            )
            if r.seed_val_f1:  # train.seeds > 1: what each seed scored on validation, and which was kept
                out[-1]["seeds"] = {"kept": r.seed, "val_f1": list(r.seed_val_f1)}
            if r.tuning:  # a grid: what was chosen inside the fold, on which inner folds
                out[-1]["tuning"] = r.tuning
        return out


def run_folds(
    model: str, hparams: dict[str, Any], windows_dir: Path, cfg: TrainParams, workers: int, address: str = ""
) -> tuple[list[FitJob], list[FitResult]]:
    """Fit every fold, ``workers`` at a time (this process and ``workers - 1`` others, each fit with
    ``cfg.threads`` threads), or on the Dask cluster at ``address`` (every fold at once, as its
    workers allow; they read the windows from the same path, so it must be on a shared disk)."""
    from pipeline.core.parallel import map_jobs, map_jobs_here_too

    x, _, index, meta = _windows(Path(windows_dir))
    k = int(meta["folds"])
    where = Path(windows_dir).resolve() if address else Path(windows_dir)
    values = None if address else x.path  # a Dask worker may be another machine: it makes its own copy
    rows = fold_rows(index["fold"].to_numpy(), k)
    jobs = [FitJob(model, dict(hparams), where, cfg, r, values=values) for r in rows]
    from pipeline.modeling import registry

    desc = f"{model}: {k} folds"
    if address:
        return jobs, list(map_jobs(fit, jobs, workers, desc=desc, address=address, unit="fold"))
    here = not registry.get(model).native_fit  # long native fits run where a stop can terminate them
    return jobs, map_jobs_here_too(fit, jobs, workers, desc=desc, unit="fold", threads=cfg.threads, here=here)


def fit_final(
    model: str,
    hparams: dict[str, Any],
    windows_dir: Path,
    cfg: TrainParams,
    folds: list[FitResult],
    address: str = "",
) -> FitResult:
    """The final model on every subject, for the median (low) of the folds' best epochs, no validation,
    with the hyper-parameters the folds chose most often (on the Dask cluster at ``address`` if given)."""
    from pipeline.modeling import tuning

    x, y, _, _ = _windows(Path(windows_dir))
    options = tuning.candidates(hparams, cfg.tune_budget, cfg.seed)
    if len(options) > 1:
        hparams = options[tuning.most_chosen([r.tuning["chosen"] for r in folds])]
    everyone = np.arange(len(y))
    epochs = int(statistics.median_low([r.best_epoch for r in folds]))
    seed = min(statistics.multimode([r.seed for r in folds]))  # with train.seeds > 1: kept most often
    cfg = dataclasses.replace(cfg, seed=seed)
    every = FoldRows(FINAL, everyone, everyone[:0], everyone[:0])
    where = Path(windows_dir).resolve() if address else Path(windows_dir)
    job = FitJob(model, dict(hparams), where, cfg, every, stop_after=epochs, values=None if address else x.path)
    from pipeline.modeling import registry

    if not registry.get(model).native_fit and not address:
        return fit(job)
    from pipeline.core.parallel import map_jobs

    desc = f"{model}: final"
    (res,) = map_jobs(fit, [job], 1, desc, address=address, unit="fit", threads=cfg.threads, in_process=False)
    return res


def cross_validate(
    model: str, hparams: dict[str, Any], windows_dir: Path, cfg: TrainParams, workers: int, address: str = ""
) -> CrossValidation:
    """All folds (in ``workers`` processes, or on the Dask cluster at ``address``), then the final
    model on every subject, and the unfamiliar-input score of the windows
    (pipeline/modeling/familiarity.py). The same bytes wherever the fits run."""
    from pipeline.modeling import familiarity

    x, y, index, meta = _windows(Path(windows_dir))
    jobs, results = run_folds(model, hparams, windows_dir, cfg, workers, address)
    oof = np.full((len(y), len(meta["classes"])), np.nan)
    for job, res in zip(jobs, results, strict=True):
        oof[job.rows.test] = res.proba
    final = fit_final(model, hparams, windows_dir, cfg, results, address)
    known = familiarity.calibrate(x, y, index["fold"].to_numpy(), len(meta["classes"]))
    return CrossValidation(results, oof, final, index, meta, known)
