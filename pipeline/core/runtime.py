"""What every stage process shares: its command line, logs for people, signals, and error lines.

A stage runs as ``python -m pipeline.stages <stage> [options]``; :func:`run_stage` wraps its
work so that

* our progress lines are INFO on stderr, libraries only speak at WARNING, and known library
  chatter (captum's batch-size hint, absl/TFLite start-up lines) is silenced at its source;
* a :class:`~pipeline.core.errors.PipelineError` ends with one ``error: ...`` line and its exit
  code (no traceback); anything else is a bug and keeps its traceback;
* a fault of the machine (no space, read-only, permission denied, out of memory, a dead worker) ends
  with one ``error: ...`` line and exit 3: never a quarantined input, never a recorded success;
* SIGTERM behaves like Ctrl-C: the work unwinds (temp files removed, worker processes
  stopped) and the stage exits 130 with ``error: interrupted``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.errors import Interrupted, PipelineError, machine_fault

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
FramesDir = Annotated[Path, typer.Option("--frames", help="frames stage folder")]
LandmarksDir = Annotated[Path, typer.Option("--landmarks", help="landmarks stage folder")]
FeaturesPath = Annotated[Path, typer.Option("--features", help="features Parquet")]
WindowsDir = Annotated[Path, typer.Option("--windows", help="windows folder")]
ModelsDir = Annotated[Path, typer.Option("--models", help="trained models folder")]
ReportsDir = Annotated[Path, typer.Option("--reports", help="reports folder")]
QuarantinePath = Annotated[Path, typer.Option("--quarantine", help="merged quarantine list")]
ModelName = Annotated[str, typer.Option("--model", help="a name from params train.models")]

# Native libraries (absl / glog / TFLite inside MediaPipe) read these once at start-up; they quiet
# what those libraries log after initialisation. What they print before it is filtered by
# pipeline.vision.mediapipe.quiet_native_stderr.
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "ABSL_MIN_LOG_LEVEL": "2"}


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {msg}"
        return msg


def setup_logging(level: int = logging.INFO) -> None:
    """Our lines at INFO, every library at WARNING, one plain line per record on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pipeline").setLevel(level)


def quiet_libraries() -> None:
    """Silence known, harmless library chatter at its source (never stderr as a whole)."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", message=r".*Setting forward, backward hooks.*", category=UserWarning)


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(f"stopped by {signal.Signals(signum).name}")


def handle_signals() -> None:
    """SIGTERM (what `timeout`, CI and a cancelled flow send) unwinds like Ctrl-C does; Ctrl-C works even
    when the shell started us with SIGINT ignored (background jobs); the stage stops if its parent dies."""
    from pipeline.core.parallel import die_with_parent

    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    die_with_parent(os.getppid())


# Allocations from this size up get their own pages, returned when freed (glibc's mmap threshold,
# fixed). glibc's default raises the threshold after a large free, so later large blocks (a network's
# activations over 1,024 scored windows: ~24 MB for fcn) come from the heap and are kept there: a
# train stage grew 0.1 GB per hour of video that way (bench/bench_scale.py, 10 h: 1.58 -> 0.93 GB).
MMAP_THRESHOLD = 4 << 20


def bounded_heap() -> None:
    """Fix glibc's mmap threshold in this process (mallopt) and in the processes it starts (the
    variable glibc reads at start-up). A no-op off glibc; no number changes, only where memory comes from."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl): nothing to set
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))


def run_stage(fn: Callable[[], dict | None]) -> None:
    """Run a stage's work: print its one-line JSON summary, or ``error: ...`` and exit non-zero."""
    bounded_heap()
    setup_logging()
    quiet_libraries()
    handle_signals()
    try:
        summary = fn()
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as Interrupted
        why = str(exc) or "stopped by Ctrl-C"
        typer.echo(f"error: interrupted ({why}); nothing half-written was kept", err=True)
        raise SystemExit(Interrupted.exit_code) from None
    except Exception as exc:  # the machine's fault (no space, read-only, memory, a dead worker): one line
        fault = machine_fault(exc)
        if fault is None:
            raise  # a bug: keep its traceback
        typer.echo(f"error: {fault}", err=True)
        raise SystemExit(fault.exit_code) from None
    if summary is not None:
        typer.echo(json.dumps(summary, sort_keys=True))


def stage_app(main: Callable[..., None]) -> typer.Typer:
    """A one-command Typer app for a stage's ``main`` (``python -m pipeline.stages <stage> --help``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(main)
    return app


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for DVC and the stages it runs: this interpreter's bin first on PATH (dvc.yaml's
    commands call ``python -m``), so ``.venv/bin/driver-pipeline`` works without the venv on PATH."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", **(extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc_command(*args: str) -> list[str]:
    """``dvc *args`` as this interpreter's module: the venv's own DVC, whatever PATH holds."""
    return [sys.executable, "-m", "dvc", *args]
