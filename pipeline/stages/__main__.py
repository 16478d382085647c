"""``python -m pipeline.stages <stage> [options]``: run one stage (what dvc.yaml calls).

Only the named stage's module is imported, so a stage's code is its module plus what that
module imports (the import-closure test in tests/test_dvc_deps.py holds dvc.yaml to it).
"""

from __future__ import annotations

import importlib
import sys

STAGES = ("check", "demo", "frames", "landmarks", "features", "windows", "validate", "train", "evaluate", "report")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in STAGES:
        sys.exit(f"usage: python -m pipeline.stages {{{','.join(STAGES)}}} [--help]")
    from pipeline.core.runtime import stage_app

    module = importlib.import_module(f"pipeline.stages.{argv[0]}")
    stage_app(module.main)(args=argv[1:], prog_name=f"python -m pipeline.stages {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
