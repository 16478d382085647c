"""Hyper-parameters chosen inside each cross-validation fold (nested CV), so that no reported score
was selected on the subjects it scores.

A model's grid is ``hparams.<model>.tune`` in params.yaml: each key a hyper-parameter, each value
the list of values to try, e.g. ``gru: {hidden: 32, tune: {hidden: [16, 32, 64], dropout: [0.1,
0.3]}}``. The candidates are the grid's combinations (keys in sorted order), at most
``train.tune_budget`` of them (a seeded random subset of a larger grid, kept in grid order).

For outer fold ``f`` (scored on its own subjects, stopped early on fold ``f + 1``), each candidate
is scored on inner folds taken from the outer training side only: for each of the first
``train.tune_inner_folds`` training-side folds ``g``, the candidate is fitted on the other
training-side folds, stopped early on fold ``f + 1`` as the outer model is, and scored (macro-F1) on
``g``. The candidate with the best mean inner score (ties: the earlier one) trains the outer model.
Fold ``f``'s subjects are never fitted on, stopped on or scored while choosing. The final model
takes the candidate the folds chose most often (ties: the earlier one).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.modeling.registry import TUNE_KEY

if TYPE_CHECKING:
    from pipeline.contracts.windows import FoldRows


def base_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters without the grid."""
    return {k: v for k, v in hparams.items() if k != TUNE_KEY}


def candidates(hparams: dict[str, Any], budget: int, seed: int) -> list[dict[str, Any]]:
    """Every setting to try: the base hyper-parameters updated with each combination of the grid
    (one candidate, the base, when there is no grid)."""
    grid = hparams.get(TUNE_KEY) or {}
    base = base_hparams(hparams)
    keys = sorted(grid)
    combos = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    if len(combos) > budget:
        keep = np.sort(np.random.default_rng(seed).choice(len(combos), size=budget, replace=False))
        combos = [combos[i] for i in keep]
    return [{**base, **c} for c in combos] or [base]


def inner_folds(rows: FoldRows, folds: np.ndarray, n_inner: int) -> list[tuple[int, FoldRows]]:
    """(inner fold, rows) for choosing inside outer fold ``rows``: fit on the outer training side but
    inner fold ``g``, stop early on the outer validation rows, score on ``g`` (the first ``n_inner``
    training-side folds in order)."""
    from pipeline.contracts.windows import FoldRows

    train_folds = np.asarray(folds)[rows.train]
    out = []
    for g in sorted(set(train_folds.tolist()))[:n_inner]:
        held = train_folds == g
        out.append((int(g), FoldRows(rows.fold, rows.train[~held], rows.val, rows.train[held])))
    return out


def choose(scores: list[float]) -> int:
    """The best mean inner score; ties to the earlier candidate."""
    return int(np.argmax(np.round(scores, 12)))


def most_chosen(chosen: list[int]) -> int:
    """The candidate the folds chose most often; ties to the earlier candidate."""
    counts = np.bincount(chosen)
    return int(np.argmax(counts))


def changed(candidate: dict[str, Any], hparams: dict[str, Any]) -> dict[str, Any]:
    """The grid's keys of a candidate (what tuning set)."""
    grid = hparams.get(TUNE_KEY) or {}
    return {k: candidate[k] for k in sorted(grid)}
