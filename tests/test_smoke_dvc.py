"""The real `dvc repro` of the whole pipeline on a tiny demo (3 subjects x 4 classes x 1 short clip)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import dvc_env, make_workspace, read_params, write_params


def git(work, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *ident, *args], cwd=work, check=True, capture_output=True)


def review_comment_against_the_base_branch(work) -> None:
    """The review path as a user runs it: the venv's own `driver-pipeline pr-comment` (the venv NOT on
    PATH, so its `dvc` must be found without it) on a branch that changed a param, against `master`."""
    from pipeline.review import BUDGET, MARKER

    exe = Path(sys.executable).parent / "driver-pipeline"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "DVC_NO_ANALYTICS": "1"}
    base = subprocess.run(["git", "branch", "--list", "main", "master"], cwd=work, capture_output=True, text=True)
    base_name = base.stdout.replace("*", "").split()[0]
    res = subprocess.run(
        [str(exe), "pr-comment", "--base", base_name, "--out", "comment.md"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    text = (work / "comment.md").read_text()
    first_screen = "\n".join(text.splitlines()[:8])
    assert text.startswith(MARKER) and len(text) < BUDGET
    assert "1 param(s) changed: `hparams.gru.hidden`" in first_screen and "Best now:" in first_screen
    assert "failed" not in text  # dvc metrics/params diff ran
    assert not re.search(r"\]\((?!https?://)[^)]*\)", text)  # no relative links or images
    assert "```text" in text and "| `gru` |" in text  # the forest plot and the before/now table


@pytest.mark.slow
def test_dvc_repro_whole_pipeline_on_tiny_demo(tmp_path, tiny_data):
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
        assert f"Running stage '{stage}'" in out or f"Stage '{stage}' is cached - skipping run" in out, out
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
    git(work, "add", "-A")
    git(work, "commit", "-qm", "base")
    git(work, "checkout", "-qb", "change")
    # one model's hyper-parameter: only that model's train and evaluate, and the report, rerun
    params["hparams"]["gru"] = {"hidden": 11}  # a value no other test's workspace trains (shared run-cache)
    write_params(work, params)
    ran = set(re.findall(r"Running stage '([^']+)'", dvc("repro")))
    assert ran == {"check", "train@gru", "evaluate@gru", "report"}  # check: hparams are its params
    assert "is up to date" in dvc("status") or dvc("status").strip() == "Data and pipelines are up to date."
    git(work, "add", "-A")
    git(work, "commit", "-qm", "gru hidden 11")
    review_comment_against_the_base_branch(work)
    # a typo in a hyper-parameter stops the run at start-up (the check stage), before any model trains
    params["hparams"]["gru"] = {"hiden": 12}
    params["windows"]["stride"] = 5  # stale data stages too: still nothing runs before the check
    write_params(work, params)
    res = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode != 0
    assert re.findall(r"Running stage '([^']+)'", res.stdout) == ["check"], res.stdout
    assert "error: params key 'hparams.gru.hiden' is not a hyper-parameter of 'gru'" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    params["hparams"]["gru"] = {"hidden": 11}
    params["windows"]["stride"] = 10
    write_params(work, params)
    # a new window size must really re-cut the windows (regression: DVC's run-cache once served stale ones)
    params["windows"]["size"] = 15
    write_params(work, params)
    assert "Running stage 'windows'" in dvc("repro", "windows")
    assert json.loads((work / "data" / "windows" / "meta.json").read_text())["window"] == 15
