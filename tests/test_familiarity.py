"""Unfamiliar input (pipeline/modeling/familiarity.py): windows like the training ones of drivers the
fit never saw pass; windows unlike anything in training are flagged; the cut-off is calibrated out
of fold and stored in the model card as plain numbers that give the same scores after JSON."""

import json

import numpy as np

from pipeline.contracts.windows import read_windows
from pipeline.modeling import familiarity as F
from pipeline.stages import train as T
from tests.test_train import make_set, params


def windows(seed: int, n_subjects: int = 10, per_subject: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three behaviours of 4 features over 30 frames: calm, an oscillation in f0, a raised f1; each
    driver with an own offset in f2 (as real drivers have)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, 30)
    n = n_subjects * per_subject
    subj = np.repeat(np.arange(n_subjects), per_subject)
    y = np.arange(n) % 3
    x = rng.normal(0, 0.5, (n, 30, 4))
    x[y == 1, :, 0] += 1.5 * np.sin(2 * t)
    x[y == 2, :, 1] += 2.0
    x[:, :, 2] += rng.normal(0, 0.5, n_subjects)[subj, None]
    x[::9, :5, 3] = np.nan  # not observed here and there
    return x.astype(np.float32), y, subj % 5


def test_new_drivers_like_the_training_ones_pass_and_the_cutoff_is_out_of_fold():
    x, y, folds = windows(0)
    fitted = F.calibrate(x, y, folds, 3)
    assert fitted["calibrated_on"] == "out-of-fold" and fitted["windows"] == len(x)
    assert 0.0 < fitted["oof_flagged"] <= 0.011  # the 99th percentile of out-of-fold distances
    x_new, _, _ = windows(1)  # other drivers, same behaviours and camera
    _, far = F.unfamiliar(fitted, x_new)
    assert far.mean() < 0.05


def test_what_training_never_showed_is_unfamiliar():
    x, y, folds = windows(0)
    fitted = F.calibrate(x, y, folds, 3)
    rng = np.random.default_rng(2)
    hand_over_mouth = windows(3)[0]
    hand_over_mouth[:, :, 3] = 4.0 + rng.normal(0, 0.1, hand_over_mouth.shape[:2])  # a feature stuck far off
    between = windows(4)[0]
    between[:, :, 0] += 1.5 * np.sin(np.linspace(0, 2 * np.pi, 30))  # two behaviours at once, never seen so
    between[:, :, 1] += 2.0
    frozen = np.repeat(x[:, :1], 30, axis=1)  # a frozen picture: no motion at all
    for name, odd in (("stuck feature", hand_over_mouth), ("unseen mixture", between), ("frozen", frozen)):
        rel, far = F.unfamiliar(fitted, odd)
        assert far.mean() > 0.9, (name, np.median(rel))


def test_the_card_keeps_the_fit_exactly_and_every_model_gets_it(tmp_path):
    wdir = make_set(tmp_path / "w")
    T.run(params(models=("stats_lr",)), "stats_lr", wdir, tmp_path / "models", tmp_path / "reports")
    card = json.loads((tmp_path / "models" / "stats_lr" / "config.json").read_text())
    x, y, index, meta = read_windows(wdir)
    again = F.calibrate(x, y, index["fold"].to_numpy(), len(meta["classes"]))
    assert card["familiarity"] == json.loads(json.dumps(again))  # same numbers, through JSON
    assert np.array_equal(F.score(card["familiarity"], x), F.score(again, x))
    assert card["familiarity"]["oof_flagged"] <= 0.011
    assert F.score(card["familiarity"], x[:0]).shape == (0,)
