"""dvc.yaml declares every file of the package a stage runs, and no stage runs another stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.import_closure import closure, command_modules

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
HEAVY = ("torch", "cv2", "mediapipe", "matplotlib", "great_expectations", "captum", "prefect", "sklearn")


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def undeclared(stage: dict) -> list[str]:
    """Files the stage's command imports that no dep (the file itself or a folder above it) covers."""
    deps = [Path(d) for d in dep_paths(stage)]
    files = closure(ROOT, command_modules(stage["cmd"]))
    return sorted(str(f) for f in files if not any(f == d or d in f.parents for d in deps))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_its_import_closure(name):
    stage = STAGES[name]
    assert command_modules(stage["cmd"]), f"stage '{name}' does not run a python module: {stage['cmd']}"
    missing = undeclared(stage)
    assert not missing, f"dvc.yaml stage '{name}' runs {missing} but does not declare them as deps"


def test_a_removed_dep_is_caught():
    """The check itself: drop one declared module from a stage and it is named."""
    stage = dict(STAGES["features"])
    stage["deps"] = [d for d in stage["deps"] if d != "pipeline/vision/geometry.py"]
    assert undeclared(stage) == ["pipeline/vision/geometry.py"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_imports_another_stage(name):
    files = closure(ROOT, command_modules(STAGES[name]["cmd"]))
    own = {f"pipeline/stages/{name}.py", "pipeline/stages/__init__.py", "pipeline/stages/__main__.py"}
    others = sorted(str(f) for f in files if str(f).startswith("pipeline/stages/") and str(f) not in own)
    assert not others, f"stage '{name}' imports other stages: {others}"


def test_stage_modules_import_nothing_heavy():
    """Importing any stage or apply command (what `--help` or the dispatcher does) loads no heavy library."""
    code = (
        "import importlib, sys\n"
        f"for s in {sorted(STAGES)!r}: importlib.import_module('pipeline.stages.' + s)\n"
        "import pipeline.cli\n"
        "for m in ('predict', 'monitor', 'export', 'draw', 'summary'): importlib.import_module('pipeline.apply.' + m)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
