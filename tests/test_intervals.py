"""Subject-bootstrap intervals: correct point estimates, honest width, paired comparisons."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from pipeline.evaluation.intervals import paired_difference, scores_from_confusion, subject_bootstrap

CLASSES = ["normal", "phonecall", "text", "yawn"]


def predictions(n_subjects: int, seed: int = 0, skill: float = 0.8, per_subject: int = 40):
    """Windows of ``n_subjects`` drivers; each driver has their own accuracy around ``skill``."""
    rng = np.random.default_rng(seed)
    y, pred, subj = [], [], []
    for s in range(n_subjects):
        yt = np.arange(per_subject) % 4
        acc = np.clip(rng.normal(skill, 0.15), 0, 1)  # drivers differ: correlated errors within one
        wrong = rng.random(per_subject) > acc
        p = np.where(wrong, (yt + rng.integers(1, 4, per_subject)) % 4, yt)
        y.append(yt)
        pred.append(p)
        subj.append(np.full(per_subject, f"s{s:02d}"))
    return np.concatenate(y), np.concatenate(pred), np.concatenate(subj)


def test_point_estimates_match_scikit_learn_and_sit_inside_their_intervals():
    y, pred, subj = predictions(10)
    res = subject_bootstrap(y, pred, subj, CLASSES)
    f1 = res["macro_f1"]
    assert f1.point == pytest.approx(f1_score(y, pred, average="macro"))
    assert f1.lo <= f1.point <= f1.hi and f1.hi - f1.lo > 0.01
    p, r, _, _ = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    for k, c in enumerate(CLASSES):
        pc = res["per_class"][c]
        assert pc["precision"].point == pytest.approx(p[k]) and pc["recall"].point == pytest.approx(r[k])
        assert pc["precision"].lo <= pc["precision"].point <= pc["precision"].hi
        assert pc["recall"].lo <= pc["recall"].point <= pc["recall"].hi
    assert res["subjects"] == 10


def test_more_subjects_narrow_the_interval_more_windows_do_not():
    y, pred, subj = predictions(8)
    base = subject_bootstrap(y, pred, subj, CLASSES)["macro_f1"]
    # every subject duplicated under a new id: twice the independent drivers -> narrower
    dup = subject_bootstrap(np.r_[y, y], np.r_[pred, pred], np.r_[subj, np.char.add(subj, "b")], CLASSES)["macro_f1"]
    assert dup.point == pytest.approx(base.point)
    assert dup.hi - dup.lo < 0.85 * (base.hi - base.lo)
    # the same windows repeated within each subject: no new drivers -> the same width
    rep = subject_bootstrap(np.r_[y, y], np.r_[pred, pred], np.r_[subj, subj], CLASSES)["macro_f1"]
    assert rep.hi - rep.lo == pytest.approx(base.hi - base.lo, rel=0.05)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero_and_a_real_gap_is_found():
    y, pred, subj = predictions(12)
    same = paired_difference(y, pred, pred, subj, 4)
    assert (same.point, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero()
    perfect = y.copy()
    gap = paired_difference(y, perfect, pred, subj, 4)
    assert gap.point > 0 and gap.excludes_zero()


def test_seeded_and_absent_classes_are_left_out_of_macro_f1():
    y, pred, subj = predictions(6)
    a = subject_bootstrap(y, pred, subj, CLASSES, seed=3)["macro_f1"]
    b = subject_bootstrap(y, pred, subj, CLASSES, seed=3)["macro_f1"]
    assert a == b
    conf = np.zeros((4, 4))
    conf[0, 0], conf[1, 1] = 5, 3  # classes 2 and 3 absent from the truth and never predicted
    assert scores_from_confusion(conf)["macro_f1"] == pytest.approx(1.0)
