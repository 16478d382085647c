"""How well the measured features follow the demo's commanded animation.

Regenerates each demo clip's behaviour script from its seed and correlates it with
the features the pipeline measured (after removing each subject's mean). Run after
`dvc repro features` on the demo:

    python bench/demo_fidelity.py [params.yaml] [data/features.parquet]
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from _common import ROOT


def main() -> None:
    from pipeline.core.config import load_params
    from pipeline.stages import demo

    params = load_params(sys.argv[1] if len(sys.argv) > 1 else ROOT / "params.yaml")
    feats = pd.read_parquet(sys.argv[2] if len(sys.argv) > 2 else ROOT / "data" / "features.parquet")
    p = params.demo
    n = round(p.seconds * p.fps)
    rows = []
    for si in range(p.subjects):
        for ci, label in enumerate(demo.CLASSES):
            for k in range(p.clips_per_class):
                rng = np.random.default_rng(demo.clip_seed(p.seed, si, ci, k))
                sc = demo.script(label, rng, n, p.fps, demo.habits(p.seed, si))
                f = feats[feats["video"] == f"videos__s{si + 1:02d}_{label}_{k + 1}"].sort_values("frame")
                if len(f) != n:
                    continue  # quarantined or resampled differently
                rows.append(
                    pd.DataFrame(
                        {
                            "subject": si,
                            "c_yaw": sc["yaw"],
                            "c_pitch": sc["pitch"],
                            "c_roll": sc["roll"],
                            "c_mouth": sc["mouth"],
                            "c_eyes": sc["eyes"],
                            "yaw": f["yaw"].to_numpy(),
                            "pitch": f["pitch"].to_numpy(),
                            "roll": f["roll"].to_numpy(),
                            "mar": f["mar"].to_numpy(),
                            "ear": (f["ear_left"].to_numpy() + f["ear_right"].to_numpy()) / 2,
                        }
                    )
                )
    d = pd.concat(rows).groupby("subject").transform(lambda x: x - x.mean()).dropna()
    print(f"demo fidelity over {len(d)} frames (per-subject mean removed):")
    for c, m in (("c_yaw", "yaw"), ("c_pitch", "pitch"), ("c_roll", "roll"), ("c_mouth", "mar"), ("c_eyes", "ear")):
        r = np.corrcoef(d[c], d[m])[0, 1]
        print(f"  commanded {c[2:]:6s} vs measured {m:6s}: r = {r:+.2f}, slope = {np.polyfit(d[c], d[m], 1)[0]:+.2f}")


if __name__ == "__main__":
    main()
