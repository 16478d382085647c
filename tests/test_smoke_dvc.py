"""The real `dvc repro` of the whole pipeline on a tiny demo (3 subjects x 4 classes x 1 short clip)."""

import json
import re
import subprocess

import pandas as pd
import pytest
import yaml

from tests.conftest import dvc_env, make_workspace, read_params, write_params


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_on_tiny_demo(tmp_path):
    work = make_workspace(tmp_path / "proj")
    params = read_params(work)
    env = dvc_env()

    def dvc(*args: str) -> str:
        res = subprocess.run(["dvc", *args], cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout

    out = dvc("repro")
    for stage in (
        "demo",
        "frames",
        "landmarks",
        "features",
        "windows",
        "validate",
        "train@gru",
        "evaluate@gru",
        "report",
    ):
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
    assert {"demo", "frames", "landmarks", "features", "windows", "validate", "report"} <= set(lock["stages"])
    assert {f"{s}@{m}" for s in ("train", "evaluate") for m in ("majority", "stats_lr", "gru")} <= set(lock["stages"])
    summary = (work / "reports" / "summary.md").read_text()
    assert "| `gru` |" in summary and "| `majority` |" in summary
    assert "gru" in dvc("metrics", "show")
    # a relabel must rerun features: labels.csv is one of its declared inputs
    assert "data/demo/labels.csv" in {d["path"] for d in lock["stages"]["features"]["deps"]}
    again = dvc("repro")
    assert "Running stage" not in again  # nothing changed: everything cached
    # one model's hyper-parameter: only that model's train and evaluate, and the report, rerun
    params["hparams"]["gru"] = {"hidden": 12}
    write_params(work, params)
    ran = set(re.findall(r"Running stage '([^']+)'", dvc("repro")))
    assert ran == {"check", "train@gru", "evaluate@gru", "report"}  # check: hparams are its params
    assert "is up to date" in dvc("status") or dvc("status").strip() == "Data and pipelines are up to date."
    # a typo in a hyper-parameter stops the run at start-up (the check stage), before any model trains
    params["hparams"]["gru"] = {"hiden": 12}
    params["windows"]["stride"] = 5  # stale data stages too: still nothing runs before the check
    write_params(work, params)
    res = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert re.findall(r"Running stage '([^']+)'", res.stdout) == ["check"], res.stdout
    assert "error: params key 'hparams.gru.hiden' is not a hyper-parameter of 'gru'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    params["hparams"]["gru"] = {"hidden": 12}
    params["windows"]["stride"] = 10
    write_params(work, params)
    # a new window size must really re-cut the windows (regression: DVC's run-cache once served stale ones)
    params["windows"]["size"] = 15
    write_params(work, params)
    assert "Running stage 'windows'" in dvc("repro", "windows")
    assert json.loads((work / "data" / "windows" / "meta.json").read_text())["window"] == 15
