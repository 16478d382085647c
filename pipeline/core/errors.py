"""One error hierarchy for problems a user can fix (data, labels, params, missing inputs).

Every stage entry (:func:`pipeline.core.runtime.run_stage`) turns a :class:`PipelineError`
into one ``error: ...`` line on stderr and the class's exit code: no traceback. Any other
exception is a bug and keeps its traceback. Messages name the file, row, key or stage and
say what to do.
"""

from __future__ import annotations

import errno


class PipelineError(Exception):
    """A problem with the user's inputs; ``exit_code`` is what the stage exits with."""

    exit_code = 1


class ConfigError(PipelineError, ValueError):
    """A params.yaml problem, with the dotted key in the message."""

    exit_code = 2


class LabelsError(PipelineError, ValueError):
    """A labels.csv problem; the message names the file and row."""

    exit_code = 2


class DataError(PipelineError):
    """The data cannot give what the stage needs (no video or window survived, a missing artifact)."""


class SplitError(DataError, ValueError):
    """The subject split cannot give every class to every split; says what to change."""


class ValidationFailed(DataError):
    """A critical expectation of the validation gate failed; the message lists which and where."""


class ModelError(PipelineError):
    """A model name, hyper-parameter or trained-model folder that does not fit (unknown, mismatched)."""

    exit_code = 2


class MachineError(PipelineError):
    """A problem of the machine, not of one input (no space, a read-only or forbidden folder, out of
    memory, a dead worker): the stage stops with one line and a non-zero exit, so DVC records no
    success, instead of quarantining input after input for a reason that is not theirs."""

    exit_code = 3


# errno -> what a person reads; every one of these is the machine's, whichever input was in hand
MACHINE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOMEM: "out of memory",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
}
# the same faults as libraries word them without an errno (pyarrow, OpenCV, MediaPipe)
_MACHINE_TEXT = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
    "permission denied": errno.EACCES,
    "cannot allocate memory": errno.ENOMEM,
}
WHAT_TO_DO = {
    errno.ENOSPC: "free some space (or point the output elsewhere) and run again",
    errno.EDQUOT: "free some space (or point the output elsewhere) and run again",
    errno.EROFS: "make the output folder writable (or point the output elsewhere) and run again",
    errno.EACCES: "fix the permissions of that path and run again",
    errno.EPERM: "fix the permissions of that path and run again",
    errno.ENOMEM: "free memory (fewer workers, smaller batches) and run again",
}


def machine_fault(exc: BaseException) -> MachineError | None:
    """The :class:`MachineError` behind ``exc`` (or its causes), or None when it is not the machine's."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, MachineError):
            return cur
        if isinstance(cur, MemoryError):
            return MachineError(
                f"out of memory ({type(cur).__name__}: {cur}); {WHAT_TO_DO[errno.ENOMEM]}; "
                "nothing of this run was recorded as done"
            )
        if type(cur).__name__ in ("BrokenProcessPool", "KilledWorker"):  # local pool / Dask
            return MachineError(
                f"a worker process died ({type(cur).__name__}: {cur}): killed, or out of memory? "
                "Run again with fewer workers; nothing of this run was recorded as done"
            )
        code = cur.errno if isinstance(cur, OSError) else None
        if code not in MACHINE_ERRNOS:
            text = str(cur).lower()
            code = next((c for t, c in _MACHINE_TEXT.items() if t in text), None)
        if code is not None:
            where = getattr(cur, "filename", None)
            at = f" writing or reading {where}" if where else ""
            todo = WHAT_TO_DO.get(code, "fix the machine and run again")
            return MachineError(f"{MACHINE_ERRNOS[code]}{at} ({cur}); {todo}; nothing of this run was recorded as done")
        cur = cur.__cause__ or cur.__context__
    return None


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so it unwinds through ``except Exception`` handlers (temp files
    removed, workers stopped) and is never mistaken for a quarantine reason."""

    exit_code = 130
