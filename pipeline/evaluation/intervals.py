"""Uncertainty for classification scores: a bootstrap over subjects, not windows.

Windows of one driver are strongly correlated (same face, posture, habits), so resampling
windows pretends there are far more independent observations than there are and gives
intervals that are much too narrow. Here each bootstrap replicate draws *subjects* with
replacement and pools all of their windows. Scores are computed from per-subject
confusion matrices, so a replicate costs one small matrix product and 2,000 replicates of
any split take milliseconds.

* :func:`subject_bootstrap` -> macro-F1 and per-class precision/recall, each with a 95%
  percentile interval;
* :func:`paired_difference` -> the interval of ``score(a) - score(b)`` when both models
  are scored on the same resampled subjects (their errors are correlated through the
  subjects, so the paired interval is much narrower than comparing two separate ones).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile interval (``lo <= point <= hi`` is not guaranteed in
    general for percentile intervals, but holds for the scores here in practice)."""

    point: float
    lo: float
    hi: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {"point": round(self.point, digits), "lo": round(self.lo, digits), "hi": round(self.hi, digits)}

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0


def confusion_by_subject(y: np.ndarray, pred: np.ndarray, subjects: np.ndarray, n_classes: int) -> np.ndarray:
    """(S, C, C) confusion counts (true, predicted) per subject, subjects in sorted order."""
    _, s = np.unique(np.asarray(subjects), return_inverse=True)
    out = np.zeros((s.max() + 1 if len(s) else 0, n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (s, np.asarray(y), np.asarray(pred)), 1)
    return out


def scores_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Macro-F1, per-class precision and recall from confusion matrices (..., C, C).

    Classes absent from a replicate's truth are left out of its macro-F1 (as scikit-learn does
    with ``labels=`` present classes); a class never predicted has precision 0.
    """
    conf = conf.astype(np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(-1)
    predicted = conf.sum(-2)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    macro = np.where(present, f1, 0).sum(-1) / np.maximum(present.sum(-1), 1)
    return {"macro_f1": macro, "precision": precision, "recall": recall}


def _weights(n_subjects: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, S) how often each subject is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot)


def _interval(point: float, samples: np.ndarray, level: float) -> Interval:
    """Percentile interval; replicates where the score is undefined (NaN) are left out."""
    a = (1 - level) / 2
    samples = np.asarray(samples, dtype=np.float64)
    if np.isnan(samples).all():
        return Interval(float(point), float(point), float(point))
    lo, hi = np.nanquantile(samples, [a, 1 - a])
    return Interval(float(point), float(lo), float(hi))


def subject_bootstrap(
    y: np.ndarray,
    pred: np.ndarray,
    subjects: np.ndarray,
    classes: list[str],
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, object]:
    """Macro-F1 and per-class precision/recall with intervals from resampling subjects."""
    conf = confusion_by_subject(y, pred, subjects, len(classes))
    point = scores_from_confusion(conf.sum(0))
    boot = scores_from_confusion(np.einsum("bs,sij->bij", _weights(len(conf), n_boot, seed), conf))
    return {
        "macro_f1": _interval(point["macro_f1"], boot["macro_f1"], level),
        "per_class": {
            c: {
                "precision": _interval(point["precision"][k], boot["precision"][:, k], level),
                "recall": _interval(point["recall"][k], boot["recall"][:, k], level),
            }
            for k, c in enumerate(classes)
        },
        "subjects": len(conf),
    }


def paired_difference(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    subjects: np.ndarray,
    n_classes: int,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Interval:
    """Macro-F1 of ``a`` minus that of ``b`` on the same windows, with a paired subject-bootstrap interval."""
    ca = confusion_by_subject(y, pred_a, subjects, n_classes)
    cb = confusion_by_subject(y, pred_b, subjects, n_classes)
    w = _weights(len(ca), n_boot, seed)
    fa = scores_from_confusion(np.einsum("bs,sij->bij", w, ca))["macro_f1"]
    fb = scores_from_confusion(np.einsum("bs,sij->bij", w, cb))["macro_f1"]
    point = scores_from_confusion(ca.sum(0))["macro_f1"] - scores_from_confusion(cb.sum(0))["macro_f1"]
    return _interval(point, fa - fb, level)


def threshold_bootstrap(
    target: np.ndarray,
    score: np.ndarray,
    threshold: float,
    subjects: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """Precision and recall of ``score >= threshold`` for a one-vs-rest ``target``, with intervals
    from resampling subjects (the threshold is held fixed: the uncertainty of an operating point
    chosen on these windows, as it would behave on other drivers). Replicates that hold no predicted
    (or no actual) positive leave precision (or recall) undefined and out of the interval."""
    _, s = np.unique(np.asarray(subjects), return_inverse=True)
    n = s.max() + 1 if len(s) else 0
    pos, hit = np.asarray(target).astype(bool), np.asarray(score) >= threshold
    counts = np.zeros((n, 3))  # true positives, predicted positives, actual positives per subject
    np.add.at(counts, (s, 0), (pos & hit).astype(float))
    np.add.at(counts, (s, 1), hit.astype(float))
    np.add.at(counts, (s, 2), pos.astype(float))
    boot = _weights(n, n_boot, seed) @ counts
    point = counts.sum(0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:  # undefined (NaN) where nothing was counted
        return np.divide(num, den, out=np.full_like(num, np.nan, dtype=float), where=den > 0)

    return {
        "precision": _interval(
            float(np.nan_to_num(ratio(point[0:1], point[1:2]))[0]), ratio(boot[:, 0], boot[:, 1]), level
        ),
        "recall": _interval(
            float(np.nan_to_num(ratio(point[0:1], point[2:3]))[0]), ratio(boot[:, 0], boot[:, 2]), level
        ),
    }
