"""Baselines every model is compared with; stored as JSON, never pickled."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.modeling.base import Classifier, Split, macro_f1, window_stats

if TYPE_CHECKING:
    from pipeline.core.config import TrainParams


def _json(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _scores(model: Classifier, train: Split, val: Split, n_classes: int) -> list[dict[str, Any]]:
    """A one-row training log, like the neural models' per-epoch rows."""
    row: dict[str, Any] = {"epoch": 1}
    for name, (x, y) in (("train", train), ("val", val)):
        row[f"{name}_f1"] = macro_f1(y, model.logits(x).argmax(1), n_classes) if len(y) else float("nan")
    return [row]


class Majority(Classifier):
    """Always the most frequent training class: the floor every model must clear."""

    weights_file = "baseline.json"

    def __init__(self, n_features: int, n_classes: int, window: int) -> None:
        self.n_classes = n_classes
        self.cls = 0

    def fit(self, train: Split, val: Split, n_classes: int, cfg: TrainParams) -> list[dict[str, Any]]:
        self.cls = int(np.bincount(train[1], minlength=n_classes).argmax())
        return _scores(self, train, val, n_classes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.n_classes))
        out[:, self.cls] = 1.0
        return out

    def state_bytes(self) -> bytes:
        return _json({"kind": "majority", "class": self.cls})

    def load_state(self, data: bytes) -> None:
        self.cls = int(json.loads(data)["class"])


class StatsLogReg(Classifier):
    """Logistic regression (scikit-learn) on per-window statistics of every feature."""

    weights_file = "baseline.json"

    def __init__(self, n_features: int, n_classes: int, window: int, C: float = 1.0, max_iter: int = 3000) -> None:
        self.n_classes, self.C, self.max_iter = n_classes, C, max_iter
        self.state: dict[str, Any] = {}

    def fit(self, train: Split, val: Split, n_classes: int, cfg: TrainParams) -> list[dict[str, Any]]:
        from sklearn.linear_model import LogisticRegression

        x, y = train
        s = window_stats(x)
        mean, std = s.mean(0), s.std(0) + 1e-6
        weight = "balanced" if cfg.class_weights else None
        clf = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=weight, random_state=cfg.seed)
        clf.fit((s - mean) / std, y)
        coef = np.zeros((n_classes, s.shape[1]))
        intercept = np.full(n_classes, -1e9)  # a class never seen in training is never predicted
        binary = len(clf.classes_) == 2
        coef[clf.classes_] = np.vstack([-clf.coef_, clf.coef_]) if binary else clf.coef_
        intercept[clf.classes_] = np.r_[-clf.intercept_, clf.intercept_] if binary else clf.intercept_
        self.state = {
            "kind": "stats_lr",
            "mean": mean.tolist(),
            "std": std.tolist(),
            "coef": coef.tolist(),
            "intercept": intercept.tolist(),
        }
        return _scores(self, train, val, n_classes)

    def logits(self, x: np.ndarray) -> np.ndarray:
        st = self.state
        s = (window_stats(x) - np.asarray(st["mean"])) / np.asarray(st["std"])
        return s @ np.asarray(st["coef"]).T + np.asarray(st["intercept"])

    def state_bytes(self) -> bytes:
        return _json(self.state)

    def load_state(self, data: bytes) -> None:
        self.state = json.loads(data)

    def n_parameters(self) -> int:
        return int(np.size(self.state.get("coef", [])) + np.size(self.state.get("intercept", [])))
