"""Evaluation on a hand-made data set of another shape: metrics, operating points, explanations."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.stages import evaluate as E
from pipeline.stages import train as T
from tests.test_train import CLASSES, make_set, params


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    wdir = make_set(root / "w")
    p = params(models=("stats_lr", "gru", "lstm_attn"), epochs=20, patience=20)
    p = p.__class__(**{**p.__dict__, "hparams": {"gru": {"hidden": 16}, "lstm_attn": {"hidden": 16}}})
    for name in ("stats_lr", "gru", "lstm_attn"):
        T.run(p, name, wdir, root / "models", root / "reports")
        E.run(p, name, wdir, root / "models", root / "reports")
    return root


@pytest.mark.parametrize("name", ["stats_lr", "gru", "lstm_attn"])
def test_metrics_json_for_a_reviewer(trained, name):
    m = json.loads((trained / "reports" / name / "metrics.json").read_text())
    cv = m["cv"]
    assert 0.7 < cv["macro_f1"] <= 1 and 0 <= cv["accuracy"] <= 1  # chance: 0.33
    assert set(cv["per_class"]) == set(CLASSES) and sum(c["support"] for c in cv["per_class"].values()) == 300
    iv = cv["interval"]
    assert iv["subjects"] == 10 and iv["macro_f1"]["lo"] <= cv["macro_f1"] <= iv["macro_f1"]["hi"]
    for c in CLASSES:
        for k in ("precision", "recall"):
            assert iv["per_class"][c][k]["point"] == pytest.approx(cv["per_class"][c][k], abs=1e-4)
    assert sorted(cv["per_fold"]) == ["0", "1", "2", "3", "4"]
    folds = json.loads((trained / "models" / name / "folds.json").read_text())["folds"]
    gap = np.mean([f["train_f1"] - f["test_f1"] for f in folds])
    assert m["gap"] == pytest.approx(gap, abs=1e-4)
    assert 0 <= m["ece"] <= 1 and m["latency_ms"] > 0
    for op in m["operating_points"].values():
        for mode, key, floor in (("alert", "precision", 0.9), ("report", "recall", 0.9)):
            if op[mode]:
                assert op[mode][key] >= floor
                assert op[mode]["interval"][key]["point"] == pytest.approx(op[mode][key], abs=1e-4)
    wrong = pd.read_csv(trained / "reports" / name / "wrong.csv")
    assert list(wrong.columns) == [
        "window_id",
        "video",
        "subject",
        "start_t",
        "end_t",
        "true",
        "predicted",
        "confidence",
    ]
    assert (wrong["true"] != wrong["predicted"]).all()
    cm = pd.read_csv(trained / "reports" / name / "confusion_cv.csv")
    assert len(cm) == 300 and set(cm.columns) == {"actual", "predicted"}
    for png in ("confusion.png", "pr_curves.png"):
        assert (trained / "reports" / name / "figures" / png).stat().st_size > 1000


def test_neural_models_are_explained(trained):
    m = json.loads((trained / "reports" / "gru" / "metrics.json").read_text())
    imp = m["explanations"]["feature_importance"]
    assert set(imp) == {f"f{i}" for i in range(7)} and sum(imp.values()) == pytest.approx(1, abs=1e-3)
    # the classes differ only in f0 and f1: IG must find them the most important features
    assert set(sorted(imp, key=imp.get)[-2:]) == {"f0", "f1"}
    assert m["parameters"] > 0
    for png in ("ig_maps.png", "ig_importance.png"):
        assert (trained / "reports" / "gru" / "figures" / png).exists()
    a = json.loads((trained / "reports" / "lstm_attn" / "metrics.json").read_text())
    assert set(a["explanations"]["attention_peak_step"]) == set(CLASSES)
    assert (trained / "reports" / "lstm_attn" / "figures" / "attention.png").exists()
    assert not (trained / "reports" / "gru" / "figures" / "attention.png").exists()


def test_ece_and_operating_points_by_hand():
    y = np.array([0, 0, 1, 1])
    sure = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert E.expected_calibration_error(y, sure) == pytest.approx(0.0)
    over = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]])  # 90 % sure, 50 % right
    assert E.expected_calibration_error(y, over) == pytest.approx(0.4)
    prob = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    yy = np.array([0, 1, 0, 1, 1])
    subjects = np.array(["p", "p", "q", "q", "r"])
    ops, _ = E.operating_points(yy, prob, ["a", "b"], min_precision=0.99, min_recall=0.99, subjects=subjects)
    alert = {k: v for k, v in ops["b"]["alert"].items() if k != "interval"}
    assert alert == {"threshold": 0.7, "precision": 1.0, "recall": pytest.approx(2 / 3)}
    assert ops["b"]["alert"]["interval"]["precision"]["lo"] == 1.0  # precision 1 on every subject
    assert ops["b"]["report"]["recall"] == 1.0 and ops["b"]["report"]["threshold"] == 0.4
