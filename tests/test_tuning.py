"""Hyper-parameters chosen inside the folds (nested CV): no reported score is selected on the subjects
it scores; the report says what was tuned and what it cost."""

import json

import numpy as np
import pytest

from pipeline.contracts.predictions import read_oof
from pipeline.contracts.windows import fold_rows, read_windows
from pipeline.core.config import parse_params
from pipeline.core.errors import ConfigError
from pipeline.modeling import registry, tuning
from pipeline.modeling.base import macro_f1
from pipeline.modeling.predictor import Predictor
from pipeline.stages import report as R
from pipeline.stages import train as T
from tests.test_train import make_set


def test_the_candidates_are_the_grid_within_the_budget_and_the_inner_folds_come_from_the_training_side():
    hp = {"hidden": 32, "dropout": 0.2, "tune": {"hidden": [8, 16], "dropout": [0.1, 0.3, 0.5]}}
    every = tuning.candidates(hp, budget=10, seed=0)
    assert len(every) == 6 and all("tune" not in c for c in every)
    assert every[0] == {"hidden": 8, "dropout": 0.1} and every[-1] == {"hidden": 16, "dropout": 0.5}
    some = tuning.candidates(hp, budget=3, seed=0)
    assert len(some) == 3 and all(c in every for c in some)
    assert [every.index(c) for c in some] == sorted(every.index(c) for c in some)  # grid order kept
    assert some == tuning.candidates(hp, budget=3, seed=0)  # seeded
    assert tuning.candidates({"hidden": 32}, budget=3, seed=0) == [{"hidden": 32}]
    folds = np.repeat(np.arange(5), 4)
    for outer in fold_rows(folds, 5):
        inner = tuning.inner_folds(outer, folds, 2)
        assert len(inner) == 2
        for g, rows in inner:
            scored_or_stopped = {outer.fold, (outer.fold + 1) % 5}
            assert g not in scored_or_stopped and set(folds[rows.test]) == {g}
            assert not set(folds[rows.train]) & (scored_or_stopped | {g})  # never fitted on them
            assert (rows.val == outer.val).all()  # stopped early as the outer model is
    assert tuning.choose([0.5, 0.7, 0.7]) == 1 and tuning.most_chosen([2, 0, 2, 0, 1]) == 0


def test_a_grid_is_checked_against_the_model_before_anything_trains():
    with pytest.raises(ConfigError, match=r"'hparams\.gru\.tune'\.hiddn: not a hyper-parameter of 'gru'"):
        registry.check(parse_params({"hparams": {"gru": {"tune": {"hiddn": [8, 16]}}}}))
    with pytest.raises(ConfigError, match=r"'hparams\.gru\.tune'\.hidden must be a non-empty list"):
        registry.check(parse_params({"hparams": {"gru": {"tune": {"hidden": 8}}}}))
    with pytest.raises(ConfigError, match=r"'hparams\.stats_lr\.tune' must map hyper-parameters to lists"):
        registry.check(parse_params({"hparams": {"stats_lr": {"tune": [1, 2]}}}))


def test_each_fold_tunes_on_its_training_side_and_the_final_model_loads_with_the_choice(tmp_path):
    """stats_gbm with min_samples_leaf in {100000, 20}: leaves of 100,000 windows allow no split (one
    class predicted), so every fold must choose 20 on its inner folds; gru with hidden in {4, 8}: the
    card must carry the chosen width, or the final model's weights would not load. The report's tuning
    table comes from the same record."""
    wdir = make_set(tmp_path / "w")
    x, _, _, _ = read_windows(wdir)
    p = parse_params(
        {
            "train": {"models": ["stats_gbm", "gru"], "epochs": 6, "patience": 6, "lr": 0.01, "workers": 1},
            "hparams": {
                "stats_gbm": {"max_iter": 20, "tune": {"min_samples_leaf": [100_000, 20]}},
                "gru": {"hidden": 8, "tune": {"hidden": [4, 8]}},
            },
        }
    )
    for name in ("stats_gbm", "gru"):
        T.run(p, name, wdir, tmp_path / "models", tmp_path / "reports")
    record = json.loads((tmp_path / "models" / "stats_gbm" / "folds.json").read_text())
    for f in record["folds"]:
        t = f["tuning"]
        assert t["hparams"] == {"min_samples_leaf": 20} and t["fits"] == 2 * 2 and len(t["inner_f1"]) == 2
        assert t["inner_f1"][1] > t["inner_f1"][0]
        assert f["fold"] not in t["inner_folds"] and (f["fold"] + 1) % 5 not in t["inner_folds"]
    assert record["final"]["hparams"] == {"min_samples_leaf": 20} and record["tuning"]["fits"] == 5 * 4
    oy, proba, _, _ = read_oof(tmp_path / "models" / "stats_gbm" / "oof.parquet")
    assert macro_f1(oy, proba.argmax(1), 3) > 0.7
    gru = json.loads((tmp_path / "models" / "gru" / "folds.json").read_text())
    pred = Predictor.load(tmp_path / "models" / "gru")
    assert pred.card.hparams["hidden"] == gru["final"]["hparams"]["hidden"] and "tune" not in pred.card.hparams
    assert pred.proba(x[:4]).shape == (4, 3)
    lines = R.tuning_lines({"stats_gbm": {"tuning": record["tuning"]}, "gru": {"tuning": gru["tuning"]}})
    table = "\n".join(lines)
    assert (
        "## Hyper-parameters tuned inside the folds" in table
        and "| `stats_gbm` | min_samples_leaf [100000, 20] | 2 x 2 |" in table
    )
    assert R.tuning_lines({"stats_lr": {}}) == []


def test_a_report_without_tuning_has_no_empty_section():
    assert R.join({"a": ["x"], "tuning": [], "b": ["y"]}, ("a", "tuning", "b")) == "x\n\ny\n"
