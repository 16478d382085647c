"""One error hierarchy for problems a user can fix (data, labels, params, missing inputs).

Every stage entry (:func:`pipeline.core.runtime.run_stage`) turns a :class:`PipelineError`
into one ``error: ...`` line on stderr and the class's exit code: no traceback. Any other
exception is a bug and keeps its traceback. Messages name the file, row, key or stage and
say what to do.
"""

from __future__ import annotations


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


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so it unwinds through ``except Exception`` handlers (temp files
    removed, workers stopped) and is never mistaken for a quarantine reason."""

    exit_code = 130
