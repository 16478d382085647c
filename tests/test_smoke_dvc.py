"""The real `dvc repro` through `validate` on a tiny demo (3 subjects x 4 classes x 1 short clip)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT


@pytest.mark.slow
def test_dvc_repro_through_validation_on_tiny_demo(tmp_path):
    work = tmp_path / "proj"
    work.mkdir()
    for name in ("pipeline", ".dvc", "dvc.yaml", ".dvcignore"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    for junk in ("cache", "tmp"):
        shutil.rmtree(work / ".dvc" / junk, ignore_errors=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"].update(subjects=3, clips_per_class=1, seconds=3.0)
    params["windows"].update(size=20, stride=10)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)

    def dvc(*args: str) -> str:
        res = subprocess.run(["dvc", *args], cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout

    out = dvc("repro", "validate")
    for stage in ("demo", "frames", "landmarks", "features", "windows", "validate"):
        assert f"Running stage '{stage}'" in out
    df = pd.read_parquet(work / "data" / "features.parquet")
    assert set(df["label"]) == {"normal", "phonecall", "text", "yawn"}
    assert df["subject"].nunique() == 3 and df["video"].nunique() == 12
    assert len(df) == 12 * 45 and df["face_present"].mean() > 0.98
    meta = json.loads((work / "data" / "windows" / "meta.json").read_text())
    assert meta["window"] == 20 and sorted(len(v) for v in meta["subjects"].values()) == [1, 1, 1]
    assert meta["counts"]["kept"] == 12 * 3  # 45 frames, size 20, stride 10 -> 3 windows a clip
    assert (work / "reports" / "validation" / "summary.md").read_text().startswith("# Data validation: PASSED")
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"demo", "frames", "landmarks", "features", "windows", "validate"}
    # a relabel must rerun features: labels.csv is one of its declared inputs
    assert "data/demo/labels.csv" in {d["path"] for d in lock["stages"]["features"]["deps"]}
    again = dvc("repro", "validate")
    assert "Running stage" not in again  # nothing changed: everything cached
    assert "is up to date" in dvc("status") or dvc("status").strip() == "Data and pipelines are up to date."
