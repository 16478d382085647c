"""What the unfamiliar-input score flags, measured on the stored windows (needs `make run`).

    python bench/familiarity_check.py

Prints the share of windows flagged "unfamiliar" (pipeline/modeling/familiarity.py, cut-off
calibrated out of fold as the train stage does):

1. the training windows themselves, and the out-of-fold share (unseen drivers, seen behaviours);
2. simulated changes of camera or pose applied to every window: the head turned (yaw +30/+45
   degrees), tilted (roll +30), pitched (+25), a frozen picture (no motion);
3. a behaviour never trained on: each class left out of the fit in turn, its windows scored.

The baseline is the share of the unchanged windows (about 1 % by construction)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from pipeline.contracts.windows import read_windows
    from pipeline.modeling import familiarity as F

    x, y, index, meta = read_windows(ROOT / "data" / "windows")
    folds = index["fold"].to_numpy()
    feats, classes = meta["features"], meta["classes"]
    fam = F.calibrate(x, y, folds, len(classes))

    def share(xx: np.ndarray) -> str:
        return f"{F.unfamiliar(fam, xx)[1].mean():6.1%}"

    print(f"{len(x)} windows of {len(set(index['subject']))} drivers; cut-off {fam['cutoff']:.3f}")
    print(f"training windows (in-sample)        {share(x)}")
    print(f"unseen drivers (out of fold)        {fam['oof_flagged']:6.1%}")
    for name, delta in (("yaw", 30.0), ("yaw", 45.0), ("roll", 30.0), ("pitch", 25.0)):
        if name in feats:
            xx = x.copy()
            xx[:, :, feats.index(name)] += delta
            print(f"{name} {delta:+.0f} degrees on every window      {share(xx)}")
    print(f"frozen picture (no motion)          {share(np.repeat(x[:, :1], x.shape[1], axis=1))}")
    for c, name in enumerate(classes):
        keep = y != c
        yk = np.searchsorted(sorted(set(y[keep])), y[keep])
        fit = F.calibrate(x[keep], yk, folds[keep], len(classes) - 1)
        print(f"behaviour never trained on: {name:9s} {F.unfamiliar(fit, x[~keep])[1].mean():6.1%}")


if __name__ == "__main__":
    main()
