"""Stopping a stage stops all of it: the real landmarks CLI with two spawned workers, SIGTERM and SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, write_clip

pytestmark = pytest.mark.under_load  # beside busy processes in CI (tests/conftest.py cpu_load)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def landmarks_job(clip_frames, tmp_path):
    """Planned frames for 8 clips and the landmarks command (2 workers)."""
    raw = tmp_path / "raw"
    rows = []
    for i in range(8):
        write_clip(raw / "videos" / f"c{i}.mp4", clip_frames["text"])
        rows.append(f"videos/c{i}.mp4,s{i},text\n")
    (raw / "labels.csv").write_text("video,subject,label\n" + "".join(rows))
    params = tmp_path / "params.yaml"
    params.write_text(
        f"data: {{raw_dir: {raw}}}\nframes: {{workers: 1}}\nlandmarks: {{workers: 2}}\nwindows: {{size: 10}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline.stages"]
    subprocess.run([*cmd, "frames", "--params", str(params), "--out", str(tmp_path / "fr")], check=True, env=env)
    out = tmp_path / "lm"
    argv = [*cmd, "landmarks", "--params", str(params), "--frames", str(tmp_path / "fr"), "--out", str(out)]
    return argv, env, out


def start_and_wait_for_workers(argv, env, out):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def workers() -> list[int]:  # the pool's (the resource tracker is a child too: it ends on its own)
        return [p for p in children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]

    assert wait_until(lambda: len(workers()) >= 2 and list(out.glob("*.parquet")), 120)
    return proc, workers()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_the_stage_and_its_workers(landmarks_job, sig):
    argv, env, out = landmarks_job
    proc, workers = start_and_wait_for_workers(argv, env, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Traceback" not in err
    assert wait_until(lambda: not any(alive(w) for w in workers), 5), "workers outlived their stage"
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temp file was left behind"
    for f in out.glob("*.parquet"):  # whatever has a real name is whole
        assert pq.read_table(f).num_rows == 24


@pytest.mark.slow
def test_sigkill_of_the_stage_stops_its_workers_and_nothing_is_written_after(landmarks_job):
    argv, env, out = landmarks_job
    proc, workers = start_and_wait_for_workers(argv, env, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert wait_until(lambda: not any(alive(w) for w in workers), 10), "workers outlived a killed stage"
    written = sorted(p.name for p in out.glob("*.parquet"))
    time.sleep(2)
    assert sorted(p.name for p in out.glob("*.parquet")) == written  # nothing appears after the stage died
    assert len(written) < 8 and not (out / "manifest.json").exists()
    for f in out.glob("*.parquet"):
        assert pq.read_table(f).num_rows == 24
    err = proc.stderr.read()  # everything the stage and what it started printed, until the last of them ended
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    # what a worker killed in the middle of a write leaves (a hidden temp file of our naming): the next
    # run clears it and completes
    stale = out / f".{written[0] if written else 'c0.parquet'}.0badf00d.tmp.parquet"
    stale.write_bytes(b"half a file")
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "manifest.json").exists() and not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_a_worker_killed_mid_run_stops_the_stage_as_a_fault_of_the_machine(landmarks_job):
    """The kernel's OOM killer (or anyone) SIGKILLs one worker: the stage must not carry on or report
    its videos as quarantined; it stops with one line naming the cause and exit 3, the other worker
    is stopped too, and no manifest says the output is complete (so DVC records no success)."""
    argv, env, out = landmarks_job
    proc, workers = start_and_wait_for_workers(argv, env, out)
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "a worker process died" in errors[0] and "fewer workers" in errors[0], err
    assert wait_until(lambda: not any(alive(w) for w in workers), 10), "a worker outlived its stage"
    assert not (out / "manifest.json").exists()
    assert "quarantined" not in err


SECOND_STOP = """
import os, signal, sys, time
from pathlib import Path
from pipeline.core import parallel
from pipeline.core.files import atomic_path

signal.signal(signal.SIGTERM, parallel._on_term)  # as in a pool worker
real_unlink = Path.unlink

def unlink_after_another_stop(self, missing_ok=False):
    os.kill(os.getpid(), signal.SIGTERM)  # the pool terminates every worker once one has exited
    return real_unlink(self, missing_ok=missing_ok)

Path.unlink = unlink_after_another_stop

def job(out):
    with atomic_path(out) as tmp:
        tmp.write_text("half a video")
        os.kill(os.getpid(), signal.SIGTERM)  # the stage stops this worker mid-write
        time.sleep(10)

parallel._run_job(job, Path(sys.argv[1]) / "c1.parquet")
"""


def test_a_second_stop_during_cleanup_does_not_leave_the_temp_file(tmp_path):
    """CI saw a leftover temp file after Ctrl-C: the second SIGTERM (from the pool, once another
    worker had exited) arrived while the first one was removing it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SECOND_STOP, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert list(tmp_path.iterdir()) == []


STOP_IN_A_CALLBACK = """
import ctypes, os, signal, sys, time
from pathlib import Path
from pipeline.core import parallel
from pipeline.core.files import atomic_path

parallel.stop_like_a_worker()

@ctypes.CFUNCTYPE(None)
def compiler_callback():  # as numba's compiler calls back into Python through llvmlite
    os.kill(os.getpid(), signal.SIGTERM)  # the stage stops this worker now
    time.sleep(0.5)

def job(out):
    with atomic_path(out) as tmp:
        tmp.write_text("half a model")
        compiler_callback()
        time.sleep(10)  # still running: the stop was lost

parallel._run_job(job, Path(sys.argv[1]) / "m.bin")
"""


def test_a_stop_inside_a_callback_from_native_code_still_stops_the_job_quietly(tmp_path):
    """CI saw a minirocket fit stopped while numba compiled: the SIGTERM landed in a ctypes callback,
    where Python prints the exception as "ignored" with a traceback and carries on."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    cmd = [sys.executable, "-c", STOP_IN_A_CALLBACK, str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert time.monotonic() - t0 < 8, "the job ran on after the stop"
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []


STOP_AS_THE_FILE_IS_MADE = """
import os, signal, sys, threading, time
from pathlib import Path
from pipeline.core import parallel
from pipeline.core.files import atomic_path

parallel.stop_like_a_worker()
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # as MediaPipe's threads: not blocking
real_close = os.close

def close_then_stopped(fd):
    real_close(fd)
    if not getattr(close_then_stopped, "done", False):
        close_then_stopped.done = True
        os.kill(os.getpid(), signal.SIGTERM)  # taken by the other thread; the handler runs here at once
        time.sleep(0.2)

os.close = close_then_stopped

def job(out):
    with atomic_path(out) as tmp:
        tmp.write_text("half a video")
        time.sleep(10)

parallel._run_job(job, Path(sys.argv[1]) / "v.parquet")
"""


def test_a_stop_just_as_the_temp_file_is_created_leaves_nothing(tmp_path):
    """CI saw a hidden temp file left by the landmarks stage stopped mid-run: the pool's SIGTERM reached a
    worker just as it created the next video's temp file; another thread took the signal, so holding it
    in the main thread did not, and the file existed before its name was known to the cleanup."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", STOP_AS_THE_FILE_IS_MADE, str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert list(tmp_path.iterdir()) == []
