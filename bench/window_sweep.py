"""Which window size / stride / subject baseline suits the data? A quick, honest proxy.

For each setting, cut windows with the real windows stage, fit a logistic regression
on per-window statistics (mean, std, min, max, last - first of every feature) on the
train subjects, and score macro-F1 on the held-out val + test subjects, averaged over
several subject-split seeds. Sequence models (issue 4) decide finally; this picks
defaults without them.

    python bench/window_sweep.py [data/features.parquet]
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
from _common import ROOT


def score(feats: pd.DataFrame, wp, classes, seeds=range(5)) -> tuple[float, int]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from pipeline.stages import windows as W
    from pipeline.stages.train import window_stats as stats

    f1s, n = [], 0
    for seed in seeds:
        w, _ = W.build(feats, dataclasses.replace(wp, split_seed=seed), classes)
        split = w.index["split"].to_numpy()
        y = w.index["label"].to_numpy()
        xs = stats(w.x)
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(xs[split == "train"], y[split == "train"])
        held = split != "train"
        f1s.append(f1_score(y[held], clf.predict(xs[held]), average="macro"))
        n = len(w.index)
    return float(np.mean(f1s)), n


def main() -> None:
    from pipeline.core.config import load_params

    params = load_params(ROOT / "params.yaml")
    feats = pd.read_parquet(sys.argv[1] if len(sys.argv) > 1 else ROOT / "data" / "features.parquet")
    wp, classes = params.windows, params.data.classes
    print("size stride baseline  windows  held-out macro-F1 (mean of 5 subject splits)")
    for size in (15, 30, 45, 60, 90, 120):
        for baseline in (False, True):
            f1, n = score(feats, dataclasses.replace(wp, size=size, stride=10, subject_baseline=baseline), classes)
            print(f"{size:4d} {10:6d} {baseline!s:8s} {n:8d}  {f1:.3f}")
    for stride in (5, 10, 20, 30):
        f1, n = score(feats, dataclasses.replace(wp, stride=stride), classes)
        print(f"{wp.size:4d} {stride:6d} {wp.subject_baseline!s:8s} {n:8d}  {f1:.3f}")


if __name__ == "__main__":
    main()
