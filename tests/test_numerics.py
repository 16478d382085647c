"""Same data and params give the same model bytes and metrics whatever instruction set the CPU offers.

Another CPU is simulated on this one with the variables that make MKL, oneDNN and ATen pick other
kernels (the project pins MKL's branch, ATen's capability, oneDNN's ISA and the thread count)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_train import make_set

MODELS = ("gru", "lstm_attn")  # one recurrent, one attention model
OTHER_CPUS = {
    "as is": {},
    "AVX2-only MKL/oneDNN": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "generic ATen kernels, 1 thread": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
}


def run_stage(*args: str, env: dict[str, str]) -> None:
    full = {**{k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}, **env}
    full["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-m", "pipeline.stages", *args], env=full, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def fingerprint(root, wdir, params, env) -> dict:
    out = {}
    for m in MODELS:
        common = ["--model", m, "--params", str(params), "--windows", str(wdir), "--models", str(root / "models")]
        run_stage("train", *common, "--reports", str(root / "reports"), env=env)
        run_stage("evaluate", *common, "--reports", str(root / "reports"), env=env)
        metrics = json.loads((root / "reports" / m / "metrics.json").read_text())
        metrics.pop("latency_ms")  # a timing, not a result
        log = (root / "reports" / m / "train_log.csv").read_bytes()
        oof = (root / "models" / m / "oof.parquet").read_bytes()
        out[m] = ((root / "models" / m / "model.pt").read_bytes(), log, metrics, oof)
    return out


@pytest.mark.slow
def test_training_is_identical_under_simulated_instruction_sets(tmp_path):
    wdir = make_set(tmp_path / "w", per_subject=15)
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "train": {"models": list(MODELS), "epochs": 3, "patience": 3},
                "hparams": {"gru": {"hidden": 16}, "lstm_attn": {"hidden": 16}},
                "evaluate": {"explain_windows": 10},
            }
        )
    )
    runs = {
        name: fingerprint(tmp_path / f"run{i}", wdir, params, env) for i, (name, env) in enumerate(OTHER_CPUS.items())
    }
    reference = runs["as is"]
    for name, got in runs.items():
        for m in MODELS:
            assert got[m][0] == reference[m][0], f"{m}: other model bytes with {name}"
            assert got[m][1] == reference[m][1], f"{m}: other train_log.csv with {name}"
            assert got[m][2] == reference[m][2], f"{m}: other metrics with {name}"
            assert got[m][3] == reference[m][3], f"{m}: other out-of-fold predictions with {name}"


UNPINNED = """
import hashlib, numpy as np
from pipeline.core.config import TrainParams
from pipeline.modeling import registry
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 20, 7)).astype(np.float32); y = np.arange(96) % 3
m = registry.create("lstm_attn", 7, 3, 20, {"hidden": 16}, seed=0)
m.fit((x, y), (x[:30], y[:30]), 3, TrainParams(epochs=2, patience=2))
print(hashlib.sha1(m.state_bytes()).hexdigest())
"""


@pytest.mark.slow
def test_the_simulated_cpus_do_change_unpinned_training():
    """The control: without the project's pinning, these variables do change the bytes, so the test
    above would see a CPU dependence if the pinning missed one."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env["PYTHONPATH"] = str(ROOT)

    def digest(extra: dict[str, str]) -> str:
        res = subprocess.run([sys.executable, "-c", UNPINNED], env={**env, **extra}, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert digest({}) != digest({"ATEN_CPU_CAPABILITY": "default"})


@pytest.mark.slow
def test_folds_in_parallel_give_the_same_bytes_as_one_after_another(tmp_path):
    """train.workers changes how many folds run at once, never a byte of the results (the real stage CLI)."""
    wdir = make_set(tmp_path / "w", per_subject=15)
    runs = []
    for workers in (1, 2):
        params = tmp_path / f"params{workers}.yaml"
        params.write_text(
            yaml.safe_dump(
                {
                    "train": {"models": ["gru"], "epochs": 4, "patience": 4, "workers": workers},
                    "hparams": {"gru": {"hidden": 16}},
                }
            )
        )
        root = tmp_path / f"run{workers}"
        common = ["--model", "gru", "--params", str(params), "--windows", str(wdir), "--models", str(root / "models")]
        run_stage("train", *common, "--reports", str(root / "reports"), env={})
        files = ("model.pt", "oof.parquet", "folds.json", "config.json")
        runs.append({f: (root / "models" / "gru" / f).read_bytes() for f in files})
        runs[-1]["train_log.csv"] = (root / "reports" / "gru" / "train_log.csv").read_bytes()
    for f in runs[0]:
        assert runs[0][f] == runs[1][f], f
