"""Training: generic windows data, determinism, and an evaluation that shuffled labels cannot fool."""

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contracts.windows import FORMAT, load_split
from pipeline.core.config import TrainParams, parse_params
from pipeline.core.errors import ModelError
from pipeline.modeling.base import class_weights, macro_f1
from pipeline.modeling.neural import lr_at
from pipeline.modeling.predictor import Predictor
from pipeline.stages import train as T

CLASSES = ["calm", "nod", "shake"]
FEATS = [f"f{i}" for i in range(7)]
WINDOW = 20


def make_set(root, seed=0, shuffle_train=False, n=(240, 60, 60)):
    """A hand-made windows data set of another shape: classes differ by a temporal pattern in f0/f1."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, WINDOW)
    root.mkdir(parents=True, exist_ok=True)
    for sp, k in zip(("train", "val", "test"), n, strict=True):
        y = np.arange(k) % 3
        x = rng.normal(0, 0.6, (k, WINDOW, len(FEATS))).astype(np.float32)
        x[y == 1, :, 0] += 1.5 * np.sin(2 * t)  # nodding: an oscillation in f0
        x[y == 2, :, 1] += 1.5 * np.sin(2 * t)  # shaking: the same oscillation in f1
        labels = np.asarray(CLASSES)[rng.permutation(y) if (shuffle_train and sp == "train") else y]
        pq.write_table(
            pa.table(
                {
                    "window_id": [f"{sp}{i}" for i in range(k)],
                    "video": [f"v{i}" for i in range(k)],
                    "subject": [f"{sp}-p{i % 4}" for i in range(k)],
                    "label": labels,
                    "split": [sp] * k,
                    "start_frame": np.zeros(k, np.int32),
                    "end_frame": np.full(k, WINDOW - 1, np.int32),
                    "start_t": np.zeros(k),
                    "end_t": np.full(k, 1.9),
                    "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WINDOW * len(FEATS)),
                }
            ),
            root / f"{sp}.parquet",
        )
    (root / "meta.json").write_text(
        json.dumps({"format": FORMAT, "features": FEATS, "classes": CLASSES, "window": WINDOW})
    )
    return root


def params(models=("stats_lr", "stats_gbm", "minirocket", "gru", "fcn"), **train):
    return parse_params(
        {
            "train": {"models": list(models), "epochs": 25, "patience": 25, **train},
            "hparams": {
                "gru": {"hidden": 16},
                "fcn": {"channels": 16},
                "stats_gbm": {"max_iter": 50},
                "minirocket": {"num_kernels": 840},
            },
        }
    )


def test_generic_data_set_trains_without_code_changes(tmp_path):
    wdir = make_set(tmp_path / "w")
    p = params()
    for name in (
        "stats_lr",
        "stats_gbm",
        "minirocket",
        "gru",
        "fcn",
    ):  # baselines, recurrent and 1D-CNN on another shape
        T.run(p, name, wdir, tmp_path / "models", tmp_path / "reports")
        cfg = json.loads((tmp_path / "models" / name / "config.json").read_text())
        assert (cfg["n_features"], cfg["n_classes"], cfg["window"]) == (7, 3, 20) and cfg["classes"] == CLASSES
        x, y, _, _ = load_split(wdir, "test")
        f1 = macro_f1(y, Predictor.load(tmp_path / "models" / name).proba(x).argmax(1), 3)
        assert f1 > 0.8, (name, f1)
    log = pd.read_csv(tmp_path / "reports" / "gru" / "train_log.csv")
    assert list(log.columns) == ["epoch", "train_loss", "train_f1", "val_loss", "val_f1", "lr"]
    assert log["lr"].iloc[0] < log["lr"].max()  # warm-up
    assert (tmp_path / "models" / "gru" / "model.pt").exists()


def test_same_data_and_params_give_the_same_model(tmp_path):
    wdir = make_set(tmp_path / "w")
    p = params(epochs=5, patience=5)
    T.run(p, "gru", wdir, tmp_path / "a", tmp_path / "ra")
    T.run(p, "gru", wdir, tmp_path / "b", tmp_path / "rb")
    assert (tmp_path / "a/gru/model.pt").read_bytes() == (tmp_path / "b/gru/model.pt").read_bytes()
    la, lb = ((tmp_path / r / "gru/train_log.csv").read_bytes() for r in ("ra", "rb"))
    assert la == lb  # a DVC output: no timings in it


def test_shuffled_training_labels_fall_to_chance(tmp_path):
    """Leakage check: with labels shuffled in train only, held-out macro-F1 must drop to about chance."""
    wdir = make_set(tmp_path / "w", shuffle_train=True, n=(150, 60, 120))
    p = params()
    x, y, _, _ = load_split(wdir, "test")
    for name in ("stats_lr", "stats_gbm", "gru", "fcn"):  # baselines, recurrent and 1D-CNN on another shape
        T.run(p, name, wdir, tmp_path / "models", tmp_path / "reports")
        f1 = macro_f1(y, Predictor.load(tmp_path / "models" / name).proba(x).argmax(1), 3)
        assert f1 < 0.5, (name, f1)  # chance is 0.33; the unshuffled set scores > 0.8


def test_schedule_weights_and_params_checks():
    cfg = TrainParams(epochs=10, warmup_epochs=2, lr=1.0)
    lrs = [lr_at(e, cfg) for e in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] < 0.2 and all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[1] == pytest.approx(3 * w[0]) and w.mean() == pytest.approx(1.0)
    with pytest.raises(ModelError, match=r"not in params train\.models"):
        T.run(params(models=("gru",)), "lstm", None, None, None)
