"""From class probabilities over time to what a user reads: operating thresholds, behaviour
segments and alert events. Pure functions and one small state machine, shared by ``predict``
(recorded video) and ``monitor`` (live), so both raise the same alerts on the same probabilities.

Operating modes (thresholds from the model's cross-validated evaluation, ``operating_points`` in
``reports/models/<model>/metrics.json``):

* ``alert``: precision first, for real-time alerts: per class the threshold that gives the best
  recall while the out-of-fold precision is at least ``evaluate.alert_precision``;
* ``report``: recall first, for post-hoc reports of a drive: the best precision while recall is
  at least ``evaluate.report_recall``.

An alert for class c starts at the first window whose probability of c reaches its threshold
(the alert time is that window's end: what a live monitor knows then) and ends once the
probability has stayed below the threshold for ``clear_s`` seconds: one behaviour, one alert,
even when the probability flickers around the threshold (hysteresis in time). The quiet class
(the first class, e.g. ``normal``) never alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import ConfigError, ModelError

MODES = ("alert", "report")


def thresholds_from_metrics(metrics: dict[str, Any], mode: str, classes: list[str], where: str) -> dict[str, float]:
    """Per-class thresholds of ``mode`` from an evaluation's ``operating_points``.

    A class whose target was never reached in evaluation (no operating point) gets threshold 1.0
    (never alerts) and the caller is told by :func:`unreachable`."""
    if mode not in MODES:
        raise ConfigError(f"operating mode must be one of {list(MODES)}, got '{mode}'")
    ops = metrics.get("operating_points")
    if not ops:
        raise ModelError(f"{where} has no operating points; rerun the evaluation (dvc repro evaluate)")
    out = {}
    for c in classes:
        point = (ops.get(c) or {}).get(mode)
        out[c] = float(point["threshold"]) if point else 1.0
    return out


def unreachable(metrics: dict[str, Any], mode: str) -> list[str]:
    """Classes whose ``mode`` target was never reached in evaluation (they cannot alert)."""
    return sorted(c for c, o in metrics.get("operating_points", {}).items() if not (o or {}).get(mode))


def override_thresholds(base: dict[str, float], overrides: list[str]) -> dict[str, float]:
    """Apply ``class=value`` (one class) or ``value`` (every class) overrides, in order."""
    out = dict(base)
    for item in overrides:
        name, _, value = item.rpartition("=")
        try:
            v = float(value)
        except ValueError:
            raise ConfigError(f"--threshold '{item}': expected CLASS=PROBABILITY or PROBABILITY") from None
        if not 0 <= v <= 1:
            raise ConfigError(f"--threshold '{item}': a probability must be in [0, 1]")
        if name and name not in out:
            raise ConfigError(f"--threshold '{item}': unknown class '{name}'; classes: {list(out)}")
        for c in [name] if name else list(out):
            out[c] = v
    return out


def segments(centres: np.ndarray, step: float, label: np.ndarray, confidence: np.ndarray) -> pd.DataFrame:
    """Consecutive windows with the same label merged into segments.

    Each window stands for the ``step`` seconds around its centre (``step`` = the stride), so
    segments tile the timeline without overlapping. ``label`` may hold ``""`` (no decision: too
    little face); those runs become segments of label ``""`` too and the caller decides.
    Returns ``label, start_s, end_s, windows, confidence`` (mean winning probability).
    """
    cols = ["label", "start_s", "end_s", "windows", "confidence"]
    if len(label) == 0:
        return pd.DataFrame(columns=cols)
    label = np.asarray(label, dtype=object)
    cut = np.flatnonzero(label[1:] != label[:-1]) + 1
    starts, ends = np.r_[0, cut], np.r_[cut, len(label)]
    rows = [
        (
            label[a],
            float(centres[a] - step / 2),
            float(centres[b - 1] + step / 2),
            int(b - a),
            float(np.mean(confidence[a:b])),
        )
        for a, b in zip(starts, ends, strict=True)
    ]
    return pd.DataFrame(rows, columns=cols)


@dataclass
class AlertTracker:
    """One alert per behaviour event: start when a class's probability reaches its threshold,
    clear once it stayed below: decisions below threshold from the first to the latest spanning
    ``clear_s`` seconds (a dip shorter than that, e.g. a yawn's 1-s lull, keeps the one alert).
    Feed it window decisions in time order."""

    thresholds: dict[str, float]
    quiet: str  # the class that never alerts (e.g. "normal")
    clear_s: float = 2.0
    mode: str = "alert"
    active: dict[str, dict[str, Any]] = field(default_factory=dict)

    def update(self, t: float, probs: dict[str, float], live: bool = True) -> list[dict[str, Any]]:
        """Events raised by the decision at time ``t`` (``live=False``: a window without a decision,
        e.g. no face; it counts as below threshold)."""
        out = []
        for c, thr in self.thresholds.items():
            if c == self.quiet:
                continue
            p = probs.get(c, 0.0) if live else 0.0
            ev = self.active.get(c)
            if p >= thr:
                if ev is None:
                    ev = {"class": c, "start_s": t, "peak": p, "below_since_s": None, "threshold": thr}
                    self.active[c] = ev
                    out.append(self._event("alert", ev, t, p))
                else:
                    ev["peak"] = max(ev["peak"], p)
                    ev["below_since_s"] = None
            elif ev is not None:
                if ev["below_since_s"] is None:
                    ev["below_since_s"] = t
                if t - ev["below_since_s"] >= self.clear_s:
                    out.append(self._event("clear", ev, t, p))
                    del self.active[c]
        return out

    def finish(self, t: float) -> list[dict[str, Any]]:
        """Close every open event at the end of the input."""
        out = [self._event("clear", ev, t, 0.0) for ev in self.active.values()]
        self.active.clear()
        return out

    def _event(self, kind: str, ev: dict[str, Any], t: float, p: float) -> dict[str, Any]:
        base = {
            "event": kind,
            "class": ev["class"],
            "t": round(float(t), 3),
            "mode": self.mode,
            "threshold": round(float(ev["threshold"]), 5),
        }
        if kind == "alert":
            return {**base, "probability": round(float(p), 5)}
        return {**base, "start_s": round(float(ev["start_s"]), 3), "peak": round(float(ev["peak"]), 5)}


def alert_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """Alert/clear event pairs as one row per alert: class, alert_s, clear_s, peak, threshold, mode."""
    rows = [
        {
            "class": e["class"],
            "alert_s": e["start_s"],
            "clear_s": e["t"],
            "peak": e["peak"],
            "threshold": e["threshold"],
            "mode": e["mode"],
        }
        for e in events
        if e["event"] == "clear"
    ]
    cols = ["class", "alert_s", "clear_s", "peak", "threshold", "mode"]
    return pd.DataFrame(rows, columns=cols).sort_values(["alert_s", "class"], kind="stable").reset_index(drop=True)
