"""Training: generic windows data, determinism, and an evaluation that shuffled labels cannot fool."""

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.contracts.predictions import read_oof
from pipeline.contracts.training_log import read_training_log
from pipeline.contracts.windows import FORMAT, fold_rows, read_windows
from pipeline.core.config import TrainParams, parse_params
from pipeline.core.errors import ModelError
from pipeline.modeling.base import class_weights, macro_f1
from pipeline.modeling.neural import lr_at
from pipeline.modeling.predictor import Predictor
from pipeline.stages import train as T

CLASSES = ["calm", "nod", "shake"]
FEATS = [f"f{i}" for i in range(7)]
WINDOW = 20


def make_set(root, seed=0, shuffle=False, subjects=10, per_subject=30, folds=5):
    """A hand-made windows data set of another shape: classes differ by a temporal pattern in f0/f1;
    each subject in fold ``subject % folds``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, WINDOW)
    root.mkdir(parents=True, exist_ok=True)
    k = subjects * per_subject
    subj = np.repeat(np.arange(subjects), per_subject)
    y = np.arange(k) % 3
    x = rng.normal(0, 0.6, (k, WINDOW, len(FEATS))).astype(np.float32)
    x[y == 1, :, 0] += 1.5 * np.sin(2 * t)  # nodding: an oscillation in f0
    x[y == 2, :, 1] += 1.5 * np.sin(2 * t)  # shaking: the same oscillation in f1
    x[:, :, 2] += subj[:, None] * 0.5  # a per-subject offset, as real drivers have
    x[::7, :3, 3] = np.nan  # not observed here and there
    labels = np.asarray(CLASSES)[rng.permutation(y) if shuffle else y]
    pq.write_table(
        pa.table(
            {
                "window_id": [f"w{i}" for i in range(k)],
                "video": [f"v{s}_{i // 10}" for i, s in enumerate(subj)],
                "subject": [f"p{s}" for s in subj],
                "label": labels,
                "fold": (subj % folds).astype(np.int16),
                "start_frame": np.zeros(k, np.int32),
                "end_frame": np.full(k, WINDOW - 1, np.int32),
                "start_t": np.zeros(k),
                "end_t": np.full(k, 1.9),
                "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), WINDOW * len(FEATS)),
            }
        ),
        root / "windows.parquet",
    )
    meta = {"format": FORMAT, "features": FEATS, "classes": CLASSES, "window": WINDOW, "folds": folds}
    meta["normalisation"] = {"subject_baseline": False}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def params(models=("stats_lr", "stats_gbm", "minirocket", "gru", "fcn"), **train):
    return parse_params(
        {
            "train": {"models": list(models), "epochs": 25, "patience": 25, "workers": 1, **train},
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
    x, y, _, _ = read_windows(wdir)
    for name in ("stats_lr", "stats_gbm", "minirocket", "gru", "fcn"):  # baselines, recurrent, 1D-CNN
        T.run(p, name, wdir, tmp_path / "models", tmp_path / "reports")
        cfg = json.loads((tmp_path / "models" / name / "config.json").read_text())
        assert (cfg["n_features"], cfg["n_classes"], cfg["window"]) == (7, 3, 20) and cfg["classes"] == CLASSES
        oy, proba, _, classes = read_oof(tmp_path / "models" / name / "oof.parquet")
        assert classes == CLASSES and len(oy) == len(y) and np.isfinite(proba).all()
        assert macro_f1(oy, proba.argmax(1), 3) > 0.8, name  # out of fold: subjects never seen
        final = Predictor.load(tmp_path / "models" / name)  # the final model, on all subjects
        assert macro_f1(y, final.proba(x).argmax(1), 3) > 0.8, name
    log = read_training_log(tmp_path / "reports" / "gru")  # dvclive's files, read back
    assert set(log.columns) == {"run", "epoch", "train_loss", "train_f1", "val_loss", "val_f1", "lr"}
    assert set(log["run"]) == {"fold0", "fold1", "fold2", "fold3", "fold4", "final"}
    folds = json.loads((tmp_path / "models" / "gru" / "folds.json").read_text())
    final_epochs = int(np.median([f["best_epoch"] for f in folds["folds"]]))
    final = log[log["run"] == "final"]
    assert abs(len(final) - final_epochs) <= 1 and final["val_f1"].isna().all()  # no validation for the final fit
    fold0 = log[log["run"] == "fold0"]
    assert fold0["epoch"].tolist() == list(range(1, len(fold0) + 1)) and fold0["lr"].iloc[0] < fold0["lr"].max()
    tsv = (tmp_path / "reports" / "gru" / "training" / "plots" / "metrics" / "fold0" / "val_f1.tsv").read_text()
    assert tsv.startswith("step\tval_f1\n0\t") and "timestamp" not in tsv  # what `dvc plots` reads, no clock
    summary = json.loads((tmp_path / "reports" / "gru" / "training" / "metrics.json").read_text())
    assert summary["fold0"]["val_f1"] == fold0["val_f1"].iloc[-1]  # `dvc metrics`/`dvc exp show`: last epoch
    base = read_training_log(tmp_path / "reports" / "stats_lr")  # one-step fits log that step
    assert set(base["run"]) == {*(f"fold{k}" for k in range(5)), "final"} and (base["epoch"] == 1).all()


def test_no_subject_is_on_both_sides_of_a_fold(tmp_path):
    """Checked on the written artifacts: folds.json (who trained, stopped early, was scored) and the
    out-of-fold predictions (which fold scored each window)."""
    wdir = make_set(tmp_path / "w")
    T.run(params(), "stats_lr", wdir, tmp_path / "models", tmp_path / "reports")
    folds = json.loads((tmp_path / "models" / "stats_lr" / "folds.json").read_text())["folds"]
    _, _, oof, _ = read_oof(tmp_path / "models" / "stats_lr" / "oof.parquet")
    _, _, windows, _ = read_windows(wdir)
    assert (oof["window_id"].to_numpy() == windows["window_id"].to_numpy()).all()
    assert (oof["fold"].to_numpy() == windows["fold"].to_numpy()).all()  # each window scored by its own fold
    scored = []
    for f in folds:
        train, val, test = set(f["train_subjects"]), set(f["val_subjects"]), set(f["subjects"])
        assert not (train & test) and not (val & test) and not (train & val), f
        assert set(oof.loc[oof["fold"] == f["fold"], "subject"]) == test
        scored += f["subjects"]
    assert sorted(scored) == sorted(set(windows["subject"]))  # every subject scored exactly once


def test_shuffled_labels_give_chance_out_of_fold(tmp_path):
    """Leakage check: with labels shuffled, the pooled out-of-fold macro-F1 must be about chance
    (the unshuffled set scores > 0.8)."""
    wdir = make_set(tmp_path / "w", shuffle=True)
    short = params(epochs=10, patience=10)  # a leak shows at once; chance needs no long training to show
    for name in ("stats_lr", "stats_gbm", "gru", "fcn"):  # baselines, recurrent and 1D-CNN on another shape
        T.run(short, name, wdir, tmp_path / "models", tmp_path / "reports")
        oy, proba, _, _ = read_oof(tmp_path / "models" / name / "oof.parquet")
        assert macro_f1(oy, proba.argmax(1), 3) < 0.45, name  # chance is 0.33


def test_schedule_weights_and_params_checks():
    cfg = TrainParams(epochs=10, warmup_epochs=2, lr=1.0)
    lrs = [lr_at(e, cfg) for e in range(10)]
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] < 0.2 and all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[1] == pytest.approx(3 * w[0]) and w.mean() == pytest.approx(1.0)
    with pytest.raises(ModelError, match=r"not in params train\.models"):
        T.run(params(models=("gru",)), "lstm", None, None, None)


def test_each_fold_normalises_with_its_training_windows_only(tmp_path):
    from pipeline.contracts.windows import Normaliser, fold_rows
    from pipeline.modeling.crossval import FitJob, fit

    wdir = make_set(tmp_path / "w")
    x, _, index, _ = read_windows(wdir)
    rows = fold_rows(index["fold"].to_numpy(), 5)[0]
    res = fit(FitJob("stats_lr", {}, wdir, params().train, rows))
    assert res.normaliser == Normaliser.fit(x[rows.train])
    assert res.normaliser != Normaliser.fit(x)  # the scored subjects' values (f2 offsets) are not in it
    assert res.proba.shape == (len(rows.test), 3)


def test_the_training_log_is_written_in_a_git_repo_without_commits(tmp_path, monkeypatch):
    """dvclive looks at the repository it runs in; a fresh `git init` (no commit yet) made it fail, and
    it would post to DVC Studio when a token is configured. Neither happens here."""
    import subprocess

    from pipeline.contracts.training_log import write_training_log

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STUDIO_TOKEN", "not-a-token")  # would be used to post, were Studio not off
    monkeypatch.setenv("DVC_STUDIO_URL", "http://127.0.0.1:9")  # and nothing listens there
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_f1": 0.5, "lr": 0.001} for e in range(3)]
    write_training_log(tmp_path / "m", {"fold0": history, "final": history[:2]})
    log = read_training_log(tmp_path / "m")
    assert len(log[log["run"] == "fold0"]) == 3 and len(log[log["run"] == "final"]) == 2
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["training"]  # no dvc.yaml, no report


def test_minirocket_beyond_the_ridge_size_fits_logistic_regression_with_c_from_a_hold_out(monkeypatch):
    """The ridge's leave-one-out solve grows with the cube of the windows; beyond RIDGE_CV_MAX training
    windows MiniRocket fits logistic regression (C chosen on a held-out tail), as its paper does for
    large sets. Lowered here so a small set takes that path; the ridge path is kept below it."""
    from pipeline.modeling import baselines as B

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, WINDOW)

    def windows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % 3
        x = rng.normal(0, 0.6, (n, WINDOW, 3)).astype(np.float32)
        x[y == 1, :, 0] += 1.5 * np.sin(2 * t)
        x[y == 2, :, 1] += 1.5 * np.sin(2 * t)
        return x, y

    cfg = params(models=("minirocket",)).train
    train, new = windows(600), windows(300)
    empty = (train[0][:0], train[1][:0])
    ridge = B.MiniRocket(3, 3, WINDOW, num_kernels=500)
    ridge.fit(train, empty, 3, cfg)
    assert "alpha" in ridge.state and "classifier" not in ridge.state
    monkeypatch.setattr(B, "RIDGE_CV_MAX", 200)
    m = B.MiniRocket(3, 3, WINDOW, num_kernels=500)
    m.fit(train, empty, 3, cfg)
    assert m.state["classifier"] == "logistic" and m.state["C"] in B.LARGE_SET_C
    assert len(m.state["holdout_f1"]) == len(B.LARGE_SET_C) and max(m.state["holdout_f1"]) > 0.9
    assert (m.logits(new[0]).argmax(1) == new[1]).mean() > 0.9  # it learnt the patterns, on unseen windows
    again = B.MiniRocket(3, 3, WINDOW, num_kernels=500)
    again.fit(train, empty, 3, cfg)
    assert again.state_bytes() == m.state_bytes()  # deterministic


def test_device_auto_trains_on_the_cpu_here_with_the_cpu_bytes_and_a_missing_gpu_is_named(tmp_path):
    """`train.device: auto` takes a GPU when torch finds one; on this CPU-only machine it must train the
    bytes of `cpu`. Asking for `cuda` without a GPU, or for a device that does not exist, is an error
    naming the key (checked with the params, before any fold trains)."""
    import torch

    from pipeline.core.errors import ConfigError
    from pipeline.modeling.crossval import FitJob, fit
    from pipeline.modeling.numerics import resolve_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: auto trains there (README: what reproducible means on a GPU)")
    wdir = make_set(tmp_path / "w", per_subject=10)
    _, _, index, _ = read_windows(wdir)
    rows = fold_rows(index["fold"].to_numpy(), 5)[0]
    states = []
    for device in ("cpu", "auto"):
        cfg = params(epochs=3, patience=3, jitter=0.1, scaling=0.1, device=device).train
        res = fit(FitJob("bilstm_attn", {"hidden": 8}, wdir, cfg, rows))
        states.append((res.state, res.proba.tobytes()))
    assert resolve_device("auto") == "cpu" and states[0] == states[1]
    with pytest.raises(ConfigError, match=r"'train\.device' is 'cuda' but torch finds no GPU here"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"train\.device.*must be cpu, auto"):
        params(device="gpu")


def test_early_stopping_keeps_no_epoch_before_min_epochs_and_follows_the_smoothed_score(tmp_path):
    """A lucky first epoch (a noisy validation fold) must not be the one kept: ``train.min_epochs``
    keeps no earlier epoch and stops no earlier; ``train.smooth_epochs`` ranks epochs by the mean
    validation macro-F1 of the last few."""
    from pipeline.modeling.base import selected_epoch
    from pipeline.modeling.crossval import FitJob, fit

    h = [{"epoch": i + 1, "val_f1": v, "val_loss": 1.0} for i, v in enumerate([0.9, 0.2, 0.5, 0.6, 0.55, 0.3])]
    assert selected_epoch(h, smooth=1, min_epochs=1, n_epochs=6) == 1  # the old rule: epoch 1's lucky 0.9
    assert selected_epoch(h, smooth=1, min_epochs=3, n_epochs=6) == 4
    assert selected_epoch(h, smooth=3, min_epochs=3, n_epochs=6) == 5  # means .53 .43 .55 .48 from epoch 3
    assert selected_epoch(h[:2], smooth=3, min_epochs=3, n_epochs=2) == 2  # fewer epochs than min: the last
    wdir = make_set(tmp_path / "w", per_subject=10)
    _, _, index, _ = read_windows(wdir)
    rows = fold_rows(index["fold"].to_numpy(), 5)[0]
    cfg = params(epochs=10, patience=1, min_epochs=6, smooth_epochs=2).train
    res = fit(FitJob("gru", {"hidden": 8}, wdir, cfg, rows))
    assert len(res.history) >= 6 and res.best_epoch >= 6  # patience 1 did not stop it before epoch 6
    assert res.best_epoch == selected_epoch(res.history, 2, 6, 10)


@pytest.mark.slow
def test_several_seeds_per_fold_shrink_the_seed_to_seed_spread_of_cv_macro_f1(tmp_path):
    """Five trainings that differ only in their seed: CV macro-F1 (pooled out-of-fold) spreads far less
    when every fold keeps the median of 3 seeds by validation score than with one seed
    (measured here: sd 0.098 -> 0.020). The spread of each fold's seeds is written to folds.json."""
    from pipeline.modeling.crossval import cross_validate

    wdir = make_set(tmp_path / "w", per_subject=15, seed=1)
    sd = {}
    for seeds in (1, 3):
        scores = []
        for base in range(5):
            train = {"epochs": 12, "patience": 12, "min_epochs": 4, "smooth_epochs": 3, "jitter": 0.1}
            cfg = params(models=("gru",), seed=base * 10, seeds=seeds, scaling=0.1, **train).train
            cv = cross_validate("gru", {"hidden": 8}, wdir, cfg, 1)
            y = cv.index["label"].map({c: i for i, c in enumerate(cv.meta["classes"])}).to_numpy()
            scores.append(macro_f1(y, cv.oof.argmax(1), 3))
        sd[seeds] = float(np.std(scores))
        folds = cv.fold_summary(y)
        assert all(("seeds" in f) == (seeds > 1) for f in folds)
        if seeds > 1:
            assert all(len(f["seeds"]["val_f1"]) == 3 and f["seeds"]["kept"] in (40, 41, 42) for f in folds)
    assert sd[3] < sd[1] / 2, sd
