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
    for sp in ("train", "val", "test"):
        assert 0 <= m[sp]["macro_f1"] <= 1 and 0 <= m[sp]["accuracy"] <= 1
        assert set(m[sp]["per_class"]) == set(CLASSES)
        assert sum(c["support"] for c in m[sp]["per_class"].values()) > 0
    assert m["test"]["macro_f1"] > 0.8
    assert m["gap"] == pytest.approx(m["train"]["macro_f1"] - m["val"]["macro_f1"], abs=1e-4)
    assert 0 <= m["ece"] <= 1 and m["latency_ms"] > 0
    for op in m["operating_points"].values():
        if op["alert"]:
            assert op["alert"]["precision"] >= 0.9
        if op["report"]:
            assert op["report"]["recall"] >= 0.9
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
    cm = pd.read_csv(trained / "reports" / name / "confusion_test.csv")
    assert len(cm) == 60 and set(cm.columns) == {"actual", "predicted"}
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
    ops, _ = E.operating_points(yy, prob, ["a", "b"], min_precision=0.99, min_recall=0.99)
    assert ops["b"]["alert"] == {"threshold": 0.7, "precision": 1.0, "recall": pytest.approx(2 / 3)}
    assert ops["b"]["report"]["recall"] == 1.0 and ops["b"]["report"]["threshold"] == 0.4
