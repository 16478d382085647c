"""windows stage's windowing vs a bare sliding_window_view + copy of the same array.

Throughput in frame-rows per second (goal: stage >= 0.5x bare), on a synthetic
features table of 200 videos x 900 frames (5 subjects' worth of long recordings).

    python bench/bench_windows.py
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from _common import best_of

N_VIDEOS, FRAMES = 200, 900


def table() -> pd.DataFrame:
    from pipeline.contracts.features import REGISTRY

    rng = np.random.default_rng(0)
    n = N_VIDEOS * FRAMES
    vid = np.repeat(np.arange(N_VIDEOS), FRAMES)
    df = pd.DataFrame(
        {
            # id columns as the features stage writes them (categoricals)
            "video": pd.Categorical([f"v{i:03d}" for i in vid]),
            "subject": pd.Categorical([f"s{i % 20:02d}" for i in vid]),
            "label": pd.Categorical(np.array(["normal", "phonecall", "text", "yawn"])[vid % 4]),
            "frame": np.tile(np.arange(FRAMES, dtype=np.int32), N_VIDEOS),
            "t": np.tile(np.arange(FRAMES) / 15, N_VIDEOS),
        }
    )
    for name in REGISTRY:
        df[name] = rng.normal(size=n).astype(np.float32)
    df["face_present"] = np.float32(1)
    return df


def main() -> None:
    from numpy.lib.stride_tricks import sliding_window_view

    from pipeline.core.config import WindowsParams
    from pipeline.stages import windows as W

    df = table()
    wp = WindowsParams()
    classes = ("normal", "phonecall", "text", "yawn")
    x = np.ascontiguousarray(df[list(wp.features)].to_numpy(np.float32))  # the bare loop gets row-major too
    n = len(df)

    def bare() -> int:
        v = sliding_window_view(x, wp.size, axis=0)[:: wp.stride]
        np.ascontiguousarray(v.transpose(0, 2, 1))
        return n

    def stage(baseline: bool) -> int:
        W.make_windows(df, dataclasses.replace(wp, subject_baseline=baseline), classes)
        return n

    f_bare = best_of(bare)
    for baseline in (False, True):
        f_stage = best_of(lambda b=baseline: stage(b))
        print(
            f"windowing {n} frame-rows, size {wp.size}, stride {wp.stride}, subject_baseline={baseline}: "
            f"bare {f_bare / 1e6:.2f} M rows/s | stage {f_stage / 1e6:.2f} M rows/s | ratio {f_stage / f_bare:.2f}"
            " (goal >= 0.5)"
        )


if __name__ == "__main__":
    main()
