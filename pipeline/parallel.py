"""Per-video fan-out: a local process pool (spawn) with a progress bar.

Workers are started with ``spawn`` so each builds its own MediaPipe/OpenCV state
(never inherited across a fork). Results come back in input order.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_videos(fn: Callable[[T], R], jobs: Iterable[T], workers: int, desc: str) -> Iterator[R]:
    """Apply ``fn`` to each job on ``workers`` processes (1 = in this process), in order."""
    from tqdm import tqdm

    jobs = list(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="video", disable=None)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as ex:
            for res in ex.map(fn, jobs):
                yield res
                bar.update()
    finally:
        bar.close()
