"""The quarantine contract: ``data/quarantine.json``, every input the pipeline did not use.

``quarantined``: one entry per refused video (``video_id, video, stage, reason``), sorted by
id; ``ignored_files``: files in the raw folder that labels.csv does not mention;
``warnings``: inputs that were used but need a look (``video_id, video, stage, warning``),
e.g. stretches of a recording without frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.files import read_json, write_json


def write_quarantine(
    path: Path, quarantined: list[dict[str, Any]], ignored: list[str], warnings: list[dict[str, Any]] | None = None
) -> None:
    write_json(
        path,
        {
            "quarantined": sorted(quarantined, key=lambda v: v["video_id"]),
            "ignored_files": ignored,
            "warnings": warnings or [],
        },
    )


def read_quarantine(path: Path | None) -> dict[str, Any]:
    """The list, or an empty one when the file does not exist (nothing was quarantined yet)."""
    if path is None or not Path(path).exists():
        return {"quarantined": [], "ignored_files": [], "warnings": []}
    return read_json(path)
