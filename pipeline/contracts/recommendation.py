"""The recommendation contract: ``reports/recommendation.json``, written by the report stage.

``best`` (best cross-validated macro-F1), ``stable`` (smallest train-test gap among the best),
``alert`` (precision first: best recall at the alert precision), ``report`` (recall first: best
precision at the report recall), each a model name, and ``tied_with_best`` (the models whose
paired difference with the best is inside the noise). Applying a model (pipeline/apply) takes
the ``alert`` or ``report`` model by default, for the operating mode asked for.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import ModelError
from pipeline.core.files import read_json, write_json

FILE = "recommendation.json"
MODES = ("alert", "report")


def write_recommendation(reports_dir: Path, rec: dict[str, str], tied: list[str]) -> None:
    write_json(Path(reports_dir) / FILE, {**rec, "tied_with_best": sorted(tied)})


def recommended_model(reports_dir: Path, mode: str) -> str:
    """The model the report recommends for ``mode`` (``alert`` or ``report``)."""
    path = Path(reports_dir) / FILE
    if not path.exists():
        raise ModelError(f"{path} not found: run the pipeline first (dvc repro), or name a model with --model")
    rec = read_json(path)
    if mode not in rec:
        raise ModelError(f"{path} has no '{mode}' recommendation; rerun the report stage (dvc repro report)")
    return str(rec[mode])
