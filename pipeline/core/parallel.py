"""Per-video (and per-fold) fan-out: a local process pool (spawn) with a progress bar, or a Dask cluster.

With a Dask scheduler address (params ``parallel.dask_address`` or the environment
variable ``DRIVER_PIPELINE_DASK_ADDRESS``, which wins) the same per-video function runs
on that cluster instead; results are byte-identical either way (tested).

Local workers are started with ``spawn`` so each builds its own MediaPipe/OpenCV state
(never inherited across a fork), and each is pinned to one core where the OS allows
it: MediaPipe's internal thread pools otherwise contend across processes (measured
+5% throughput with 2 workers here). Results come back in input order.

Stopping: if the stage is interrupted (Ctrl-C, SIGTERM) the queued videos are cancelled
and the workers are terminated at once (not after their current video); a worker unwinds
on SIGTERM, so its temp file is removed. If the stage process dies without a chance to
clean up (SIGKILL, the OOM killer), each worker gets SIGTERM from the kernel
(``PR_SET_PDEATHSIG``) and exits without renaming its output into place.
"""

from __future__ import annotations

import ctypes
import functools
import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from pipeline.core.errors import Interrupted

T = TypeVar("T")
R = TypeVar("R")
ENV_ADDRESS = "DRIVER_PIPELINE_DASK_ADDRESS"
PR_SET_PDEATHSIG = 1


_in_job = False


def _on_term(signum: int, frame: Any) -> None:
    """In a worker: unwind the current video (its temp file is removed), or exit at once when idle."""
    if not _in_job:
        os._exit(128 + signum)
    # One stop is enough. A second SIGTERM must not cut the unwinding short (its temp file would
    # stay): the pool sends one to every worker as soon as any worker has exited.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(f"worker stopped by {signal.Signals(signum).name}")


def _on_lost_stop(hook: Any) -> None:
    """``sys.unraisablehook`` in a worker: a SIGTERM that landed in a callback from native code
    (numba's compiler calls back into Python through ctypes) raised there and was swallowed, with a
    traceback on stderr. Instead: nothing printed, and the stop is delivered again, so the job unwinds
    at the next line of Python. Anything else goes to the default hook."""
    if isinstance(hook.exc_value, Interrupted):
        import threading

        signal.signal(signal.SIGTERM, _on_term)
        # sent from a thread, a moment later: sent from here, the handler would run (and raise) in here
        again = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        again.daemon = True
        again.start()
        return
    sys.__unraisablehook__(hook)


def _run_job(fn: Callable[[T], R], job: T) -> R:
    """A worker's call: when SIGTERM unwound the job, exit instead of taking the next one (the
    pool would otherwise report the exception to a stage that may be gone and carry on)."""
    global _in_job
    _in_job = True
    try:
        return fn(job)
    except Interrupted:
        os._exit(128 + signal.SIGTERM)
    finally:
        _in_job = False


def _run_pinned(fn: Callable[[T], R], job: T) -> R:
    """A job on a Dask worker: only where numpy runs the pinned kernels (same bytes as a local run)."""
    from pipeline.core.cpu import require_pinned

    require_pinned(f"Dask worker {os.uname().nodename}:{os.getpid()}")
    return fn(job)


def die_with_parent(parent: int) -> None:
    """Linux: ask the kernel for SIGTERM when the parent process dies; exit if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the stage's own cleanup still stops the pool
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def stop_like_a_worker() -> None:
    """A worker's signals: SIGTERM unwinds the current job (or exits when idle), even from inside a
    callback from native code; Ctrl-C is ignored (the stage handles it and terminates us)."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.unraisablehook = _on_lost_stop


def _init_worker(counter: Any, parent: int, cores_each: int = 1) -> None:
    """Pool initializer: stop with the stage, unwind on SIGTERM, ignore Ctrl-C (the stage handles
    it and terminates us), and pin this worker to the next ``cores_each`` allowed cores."""
    die_with_parent(parent)
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())  # tqdm's default is a multiprocessing lock: a leaked semaphore at exit
    stop_like_a_worker()
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    os.sched_setaffinity(0, {cores[(i * cores_each + j) % len(cores)] for j in range(cores_each)})


def _terminate(ex: ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Cancel queued work and stop the workers now (``shutdown`` alone waits for running tasks)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(grace_s)
        if p.is_alive():
            p.kill()
            p.join()
    # The pool's manager thread closes its wake-up pipe once it sees the workers gone; at exit, Python
    # wakes that thread through the same pipe and, if the two race, prints an EBADF traceback
    # (CPython 3.11). Waiting for the thread here ends the race before exit.
    manager = getattr(ex, "_executor_manager_thread", None)
    if manager is not None and manager.is_alive():
        manager.join(grace_s)


TRACKER_WARNING = "ignore:resource_tracker:UserWarning"


def _quiet_resource_tracker() -> None:
    """multiprocessing starts a resource tracker beside the first pool; when the stage is SIGKILLed it
    removes the pool's semaphores and says so with a UserWarning and a source line ("There appear to
    be 6 leaked semaphore objects"): library chatter, nothing is lost. It reads ``PYTHONWARNINGS``
    when it starts."""
    current = os.environ.get("PYTHONWARNINGS", "")
    if TRACKER_WARNING not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [current, TRACKER_WARNING]))


def dask_address(configured: str) -> str:
    """The Dask scheduler to use ('' = the local process pool); the environment variable wins."""
    return os.environ.get(ENV_ADDRESS, configured).strip()


def map_jobs(
    fn: Callable[[T], R],
    jobs: Iterable[T],
    workers: int,
    desc: str,
    address: str = "",
    unit: str = "video",
    threads: int = 1,
    in_process: bool = True,
) -> Iterator[R]:
    """Apply ``fn`` to each job, in order: on a Dask cluster at ``address`` if given, else on
    ``workers`` local processes (1 = in this process, unless ``in_process`` is False: then in one
    child process, which Ctrl-C or SIGTERM terminate even inside a native call), each pinned to
    ``threads`` cores (at most ``cores // threads`` workers run)."""
    from tqdm import tqdm

    jobs = list(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=None)
    try:
        if address:
            from distributed import Client

            with Client(address, set_as_default=False) as client:
                futures = client.map(functools.partial(_run_pinned, fn), jobs, pure=False)
                try:
                    for fut in futures:  # in input order; the cluster runs them in parallel
                        yield fut.result()
                        bar.update()
                except BaseException:
                    client.cancel(futures)
                    raise
            return
        n = max(1, min(workers, len(jobs), max(1, (os.cpu_count() or 1) // max(1, threads))))
        if n <= 1 and in_process:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        _quiet_resource_tracker()
        ctx = mp.get_context("spawn")
        init = (ctx.Value("i", 0), os.getpid(), max(1, threads))
        ex = ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=init)
        try:
            for res in ex.map(functools.partial(_run_job, fn), jobs):
                yield res
                bar.update()
        except BaseException:
            _terminate(ex)
            raise
        ex.shutdown(wait=True)
    finally:
        bar.close()


def map_jobs_here_too(
    fn: Callable[[T], R],
    jobs: Iterable[T],
    workers: int,
    desc: str,
    unit: str = "job",
    threads: int = 1,
    here: bool = True,
) -> list[R]:
    """Like :func:`map_jobs` on local processes, but this process is one of the ``workers``: it runs
    jobs itself (already warm: no start-up, no second copy of its data) while ``workers - 1``
    spawned processes run the others. Jobs are handed out one at a time, to whoever is free.
    Results in input order. Ctrl-C or SIGTERM interrupt this process's own job at once and
    terminate the others' (as in :func:`map_jobs`). ``here=False``: only child processes run jobs
    (for work that sits in native calls no signal interrupts; the children can be terminated)."""
    import queue
    import threading

    from tqdm import tqdm

    jobs = list(jobs)
    n = min(workers, len(jobs), max(1, (os.cpu_count() or 1) // max(1, threads)))
    if not here:
        return list(map_jobs(fn, jobs, n, desc, unit=unit, threads=threads, in_process=False))
    if n <= 1:
        return list(map_jobs(fn, jobs, 1, desc, unit=unit, threads=threads))
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(jobs)):
        todo.put(i)
    results: dict[int, R] = {}
    errors: list[BaseException] = []
    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=None)
    lock = threading.Lock()
    _quiet_resource_tracker()
    ctx = mp.get_context("spawn")
    init = (ctx.Value("i", 1), os.getpid(), max(1, threads))  # the first core(s) stay this process's
    pool = ProcessPoolExecutor(n - 1, mp_context=ctx, initializer=_init_worker, initargs=init)

    def take() -> int | None:
        if errors:
            return None
        try:
            return todo.get_nowait()
        except queue.Empty:
            return None

    def done(i: int, res: R) -> None:
        with lock:
            results[i] = res
            bar.update()

    def feed() -> None:  # a daemon thread keeping one remote worker busy
        try:
            while (i := take()) is not None:
                done(i, pool.submit(_run_job, fn, jobs[i]).result())
        except BaseException as exc:  # handed to the caller's thread, which raises it
            errors.append(exc)

    feeders = [threading.Thread(target=feed, daemon=True) for _ in range(n - 1)]
    try:
        for t in feeders:
            t.start()
        while (i := take()) is not None:
            done(i, fn(jobs[i]))
        for t in feeders:
            t.join()
        if errors:
            raise errors[0]
    except BaseException:
        _terminate(pool)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(jobs))]
