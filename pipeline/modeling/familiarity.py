"""Unfamiliar input: how far a window lies from the windows a model was trained on.

A classifier always answers with one of its classes, also on video that looks like nothing it
saw (a hand over the mouth, eating, a passenger's face, another camera). The familiarity score
says how far a window is from the training windows, so pipeline/apply can report "unfamiliar"
instead of a confident class, and raise no alert.

The score is model-agnostic and cheap, on window summaries rather than network activations:

* each window (T, F) as the windows stage stores it is summarised per feature by its mean and
  its standard deviation over time (2F numbers; a feature not observed in the window counts as
  typical);
* shape: the class-conditional Mahalanobis distance (Lee et al., 2018) of the robustly scaled
  summaries (median, IQR) to the nearest class centre, under one shared covariance shrunk towards
  its diagonal mean: a combination of values no class showed;
* range: how far the window's summaries lie beyond the training range of each (0.5th to 99.5th
  percentile), in units of that range: one value no training window came near (a head turned
  far away, a mouth held open) counts fully, not diluted among 2F dimensions;
* each part is divided by its own out-of-fold 99.5th percentile, and the larger is the score.

Both are calibrated out of fold, as the models' scores are: for each cross-validation fold the
score is fitted on the other folds and measured on the fold's own subjects, i.e. on drivers the
fit never saw, and the cut-off is the ``quantile`` (0.99) of those combined scores: about 1 % of
windows like the training ones are flagged. The fit on every subject, the scales, the cut-off and
the out-of-fold share are stored in the model card (``familiarity``), as plain numbers.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pipeline.contracts.windows import Values

SHRINK = 0.05  # weight of the diagonal target in the shrunk covariance
QUANTILE = 0.99  # out-of-fold windows at or below the cut-off
CLIP = 50.0  # robust z-scores beyond this are clipped (one absurd value cannot overflow the distance)
TAIL = 0.005  # the training range of a summary: its 0.5th to 99.5th percentile
MIN_EXCESS = 0.05  # an envelope scale floor (when unseen drivers all stay inside the training range)


def summarise(x: Values) -> np.ndarray:
    """(N, T, F) windows -> (N, 2F) float64: per feature, mean then standard deviation over time
    (in batches of windows: ``x`` may be larger than memory)."""
    from pipeline.contracts.windows import map_batches

    def one(b: np.ndarray) -> np.ndarray:
        b = np.asarray(b, np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a feature not observed in a window: NaN, filled later
            return np.concatenate([np.nanmean(b, axis=1), np.nanstd(b, axis=1)], axis=1)

    return map_batches(one, x)


def _robust_scale(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = np.nanmedian(s, axis=0)
        q75, q25 = np.nanpercentile(s, [75, 25], axis=0)
        spread = (q75 - q25) / 1.349
        sd = np.nanstd(s, axis=0)
    scale = np.where(np.isfinite(spread) & (spread > 1e-9), spread, np.where(np.isfinite(sd) & (sd > 1e-9), sd, 1.0))
    return np.where(np.isfinite(loc), loc, 0.0), scale


def _z(s: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (s - loc) / scale
    return np.clip(np.nan_to_num(z, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP)


def _shape(s: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Class-conditional Mahalanobis part: robust scaling, class centres, shrunk tied precision."""
    loc, scale = _robust_scale(s)
    z = _z(s, loc, scale)
    present = [c for c in range(n_classes) if np.any(y == c)]
    means = np.stack([z[y == c].mean(axis=0) for c in present])
    resid = z - means[np.searchsorted(present, y)]
    cov = resid.T @ resid / max(1, len(z) - len(present))
    d = cov.shape[0]
    target = np.trace(cov) / d if np.trace(cov) > 0 else 1.0
    shrunk = (1 - SHRINK) * cov + SHRINK * target * np.eye(d)
    precision = np.linalg.inv(shrunk)
    precision = (precision + precision.T) / 2
    return {"loc": loc.tolist(), "scale": scale.tolist(), "centres": means.tolist(), "precision": precision.tolist()}


def _envelope(s: np.ndarray) -> dict[str, Any]:
    """Range part: the central ``1 - 2 * TAIL`` of each summary over the training windows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(s, [100 * TAIL, 100 * (1 - TAIL)], axis=0)
    lo, hi = np.where(np.isfinite(lo), lo, 0.0), np.where(np.isfinite(hi), hi, 0.0)
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    return {"low": lo.tolist(), "high": hi.tolist(), "span": span.tolist()}


def _parts(fitted: dict[str, Any], s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Mahalanobis distance to the nearest class centre, envelope excess) of summaries ``s``."""
    z = _z(s, np.asarray(fitted["loc"]), np.asarray(fitted["scale"]))
    precision = np.asarray(fitted["precision"])
    best = np.full(len(z), np.inf)
    for centre in np.asarray(fitted["centres"]):
        r = z - centre
        best = np.minimum(best, np.einsum("ij,ij->i", r @ precision, r))
    lo, hi, span = (np.asarray(fitted[k]) for k in ("low", "high", "span"))
    inside = np.where(np.isfinite(s), s, (lo + hi) / 2)  # not observed: typical
    excess = np.max(np.maximum(lo - inside, inside - hi) / span, axis=1)
    return np.sqrt(np.maximum(best, 0.0)), excess


def fit(x: Values, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Both parts fitted on windows ``x`` (N, T, F) with class indices ``y``: plain lists (JSON)."""
    return _fit(summarise(x), y, n_classes)


def _fit(s: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    return {**_shape(s, y, n_classes), **_envelope(s)}


def score(fitted: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The combined distance (N,) of windows from the training windows: each part over its own
    out-of-fold scale (``mahalanobis_scale``, ``envelope_scale``), the larger of the two."""
    if len(x) == 0:
        return np.zeros(0)
    maha, excess = _parts(fitted, summarise(x))
    return np.maximum(maha / fitted["mahalanobis_scale"], excess / fitted["envelope_scale"])


def calibrate(x: Values, y: np.ndarray, folds: np.ndarray, n_classes: int) -> dict[str, Any]:
    """The fit on every window, each part's scale and the cut-off, all out of fold: each fold's
    windows scored by a fit on the other folds. A part's scale is its ``1 - TAIL`` quantile there;
    the cut-off is the ``QUANTILE`` of the combined score there, so about 1 - QUANTILE of
    training-like windows of unseen drivers are flagged (``oof_flagged`` says how it came out)."""
    s = summarise(x)
    maha = np.full(len(x), np.nan)
    excess = np.full(len(x), np.nan)
    for f in np.unique(folds):
        held = folds == f
        if held.all() or not held.any():
            continue
        maha[held], excess[held] = _parts(_fit(s[~held], y[~held], n_classes), s[held])
    fitted = _fit(s, y, n_classes)
    done = np.isfinite(maha)
    if not done.any():  # one fold only: in-sample distances (says so)
        maha, excess = _parts(fitted, s)
        done, source = np.ones(len(x), bool), "in-sample (one fold only)"
    else:
        source = "out-of-fold"
    m_scale = max(float(np.quantile(maha[done], 1 - TAIL, method="higher")), 1e-9)
    e_scale = max(float(np.quantile(excess[done], 1 - TAIL, method="higher")), MIN_EXCESS)
    combined = np.maximum(maha[done] / m_scale, excess[done] / e_scale)
    cutoff = float(np.quantile(combined, QUANTILE, method="higher"))
    return {
        **fitted,
        "mahalanobis_scale": m_scale,
        "envelope_scale": e_scale,
        "cutoff": cutoff,
        "quantile": QUANTILE,
        "calibrated_on": source,
        "windows": int(done.sum()),
        "oof_flagged": round(float(np.mean(combined > cutoff)), 5),
        "summary": "per feature mean and std over time; the larger of a class-conditional Mahalanobis distance "
        "(shrunk covariance) and the excess beyond the training range, each over its out-of-fold scale",
    }


def unfamiliar(fitted: dict[str, Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score relative to the cut-off (N,), unfamiliar (N,) bool): a relative score above 1 is unfamiliar."""
    rel = score(fitted, x) / max(float(fitted["cutoff"]), 1e-12)
    return rel, rel > 1.0
