"""Same data and params give the same model bytes and metrics whatever CPU computes them.

1. The kernels themselves: ``driver-pipeline fingerprint`` hashes every kernel features, statistics
   models and the neural zoo use, under the pinned numerics, and must give the committed reference
   (tests/data/numerics_reference.json). The kernels are pinned to CPU-independent code, so one
   reference serves every x86-64 CPU with AVX2: on a machine whose numerics differ this test fails
   and names the op (CI checks it on whatever machine it lands on).
2. What cannot be seen from one CPU: vendor checks. The zoo uses no torch module that draws its own
   dropout masks (ATen's ``bernoulli_`` takes MKL's generator on Intel only).
3. Another CPU simulated on this one with the variables that make MKL, oneDNN and ATen pick other
   kernels: the real train/evaluate CLI gives the same bytes.
4. The compiled kernels (pipeline/modeling/kernels.py, MiniRocket's) compiled for other CPUs (AVX2,
   the generic AVX2 level, AMD Zen 3, AVX-512 with 512-bit vectors) give the bytes of this machine's
   target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.core.cpu import PROCESS_ENV
from pipeline.modeling.fingerprint import REFERENCE
from tests.conftest import ROOT
from tests.test_train import make_set

MODELS = ("lstm_attn", "transformer")  # our recurrent kernels + additive attention; self-attention blocks
OTHER_CPUS = {  # every variable that makes MKL, oneDNN or ATen pick other kernels, at once: any one that
    # mattered would change the bytes (the control below shows ATen's does, unpinned)
    "as is": {},
    "AVX2-only MKL/oneDNN, generic ATen kernels, 1 thread": {
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "default",
        "OMP_NUM_THREADS": "1",
    },
}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=full, capture_output=True, text=True)


def test_the_kernels_give_the_committed_reference_bytes():
    res = cli("fingerprint")
    assert res.returncode == 0, f"this CPU computes other bytes:\n{res.stdout}{res.stderr}"
    assert "kernels give the reference bytes" in res.stdout


def test_a_kernel_that_differs_fails_the_fingerprint_and_is_named(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    ref["ops"]["torch.mm"] = "0" * 16
    ref["ops"]["numpy.arctan2_sqrt"] = "0" * 16
    (tmp_path / "ref.json").write_text(json.dumps(ref))
    res = cli("fingerprint", "--reference", str(tmp_path / "ref.json"))
    assert res.returncode == 1
    assert "DIFFERS  numpy.arctan2_sqrt" in res.stdout and "DIFFERS  torch.mm" in res.stdout
    assert "2 of " in res.stderr and "Traceback" not in res.stderr


NUMPY_OPS = """
import sys
if sys.argv[1] == "pinned":
    import pipeline  # sets the CPU variables before numpy loads
import hashlib, numpy as np
x = np.random.default_rng(0).normal(size=(4000, 8))
print(hashlib.sha1(np.arctan2(x[:, 0], x[:, 1]).tobytes() + np.exp(x).tobytes() + (x.T @ x).tobytes()).hexdigest())
"""


KERNELS = """
import os, sys, hashlib
import pipeline  # the pinned variables; the target under test replaces numba's
os.environ["NUMBA_CPU_NAME"], os.environ["NUMBA_CPU_FEATURES"], os.environ["NUMBA_CACHE_DIR"] = sys.argv[1:4]
import numpy as np
from pipeline.modeling import kernels as K
import numba
assert (numba.config.CPU_NAME, numba.config.CPU_FEATURES or "") == tuple(sys.argv[1:3])
h = hashlib.sha1()
for dt in (np.float32,):  # what training runs (float64 compiles as long again)
    rng = np.random.default_rng(0)
    r = lambda *s: rng.normal(size=s).astype(dt)  # noqa: E731
    b, t, d, hid = 5, 13, 2, 9  # an odd batch: windows in pairs and one alone
    for cell, g in (("lstm", 4), ("gru", 3), ("rnn", 1)):
        xa, w, dy = r(b, t, d, g * hid), r(d, g * hid, hid) * dt(0.5), r(b, t, d * hid)
        wt, bias, dh, dc = np.ascontiguousarray(w.transpose(0, 2, 1)), r(d, g * hid), r(d, b, hid), r(d, b, hid)
        out, hp, more, tc = np.zeros((b, t, d * hid), dt), *(np.zeros((b, t, d, hid), dt) for _ in range(3))
        h_n, c_n, dg, dg2 = np.zeros((d, b, hid), dt), np.zeros((d, b, hid), dt), np.zeros_like(xa), np.zeros_like(xa)
        if cell == "lstm":
            K.lstm_forward(xa, bias, wt, out, hp, more, tc, h_n, c_n)
            K.lstm_backward(w, xa, more, tc, dy, dh, dc, dg)
        elif cell == "gru":
            K.gru_forward(xa, bias, r(d, g * hid), wt, out, hp, tc, h_n)
            K.gru_backward(w, xa, hp, tc, dy, dh, dg, dg2)
        else:
            K.rnn_forward(xa, bias, wt, out, hp, h_n)
            K.rnn_backward(w, out, dy, dh, dg)
        for a in (xa, out, hp, more, tc, h_n, c_n, dg, dg2, dh, dc):
            h.update(a.tobytes())
    dx = np.zeros((b, t, 6), dt)
    K.conv_input_grad(r(b * (t - 2), 5 * 6), 5, 2, dx)
    cols = np.zeros((b * (t - 2), 5 * 6), dt)
    K.conv_columns(r(b, t, 6), 5, 1, cols)
    h.update(dx.tobytes() + cols.tobytes())
    for m, k, n in ((29, 1100, 77), (2, 3, 1)):  # every tile height and width; k across blocks
        a, w, out = r(k, m).T, r(k, n), np.zeros((m, n), dt)  # a strided, as the weight gradient's
        K.matmul(a, w, out)
        h.update(out.tobytes())
if sys.argv[4] == "minirocket":
    from pipeline.modeling.baselines import _strict_kernels
    fit, transform = _strict_kernels()
    panel = np.random.default_rng(1).normal(size=(16, 12, 90)).astype(np.float32)
    params = fit(panel, 1000, 32, np.int32(0))
    for a in (*params, transform(panel, params)):
        h.update(np.asarray(a).tobytes())
print(h.hexdigest())
"""


def test_the_compiled_kernels_give_the_same_bytes_for_other_cpus(tmp_path):
    """numba compiles for the widest vector unit the CPU has (pipeline/core/cpu.py: 512-bit vectors
    with AVX-512, else AVX2); the code itself must not depend on it: the recurrent and convolution
    kernels compiled for AVX2 (haswell), the generic AVX2 level (x86-64-v3), AMD Zen 3 and, on an
    AVX-512 machine, AVX-512 with 512-bit vectors give the bytes of this machine's target, every
    state and gradient; MiniRocket's kernels too, for the other vector width. A change that lets the
    compiler reorder a sum or contract a product (fastmath, a library exp) fails here."""
    from pipeline.core.cpu import NUMBA_AVX2, NUMBA_AVX512

    pinned = (PROCESS_ENV["NUMBA_CPU_NAME"], PROCESS_ENV["NUMBA_CPU_FEATURES"])
    if pinned[0] == "generic":
        pytest.skip("this CPU has no AVX2/FMA: numba compiles for generic x86-64 here")
    others = [t for t in (NUMBA_AVX2, ("x86-64-v3", ""), ("znver3", ""), NUMBA_AVX512) if t != pinned]
    if pinned != NUMBA_AVX512:
        others.remove(NUMBA_AVX512)  # cannot run here
    wide = NUMBA_AVX2 if pinned == NUMBA_AVX512 else ("x86-64-v3", "")  # MiniRocket (compiles ~35 s) on one

    def run(target: tuple[str, str], minirocket: bool) -> str:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # this machine's target: the pipeline's cache (compiled once); the others: compiled afresh
        cache = os.environ["NUMBA_CACHE_DIR"] if target == pinned else str(tmp_path / "-".join(target))
        args = [sys.executable, "-c", KERNELS, *target, cache, "minirocket" if minirocket else "-"]
        res = subprocess.run(args, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.strip()

    here = run(pinned, False)
    assert {t: run(t, False) for t in others} == dict.fromkeys(others, here)
    assert run(wide, True) == run(pinned, True)


def test_numpy_and_openblas_are_pinned_at_import_and_the_pin_matters():
    """``import pipeline`` before numpy gives the AVX2 kernels: the same bytes as with AVX-512 switched
    off by hand (an AVX2-only CPU), and other bytes than numpy's own pick here (the control)."""

    def run(mode: str, extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k not in PROCESS_ENV} | {"PYTHONPATH": str(ROOT)} | extra
        res = subprocess.run([sys.executable, "-c", NUMPY_OPS, mode], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    pinned = run("pinned", {})
    assert pinned == run("pinned", {"OPENBLAS_CORETYPE": "SkylakeX", "NPY_DISABLE_CPU_FEATURES": ""})
    assert pinned == run("unpinned", {**PROCESS_ENV})  # what an AVX2-only machine runs
    if "avx512f" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("control needs an AVX-512 CPU (numpy and OpenBLAS pick AVX2 kernels here anyway)")
    assert pinned != run("unpinned", {})


def test_the_zoo_uses_no_vendor_dependent_torch_modules():
    """torch's nn.Dropout and its transformer layers draw masks with ``bernoulli_``, which ATen computes
    with MKL's generator on Intel processors and with its own on AMD; its recurrent layers and
    convolutions run oneDNN kernels generated for the CPU found. No registered model may contain
    them (zoo.Dropout takes torch.rand, recurrent.Recurrent and zoo.Conv1d pinned products)."""
    import torch

    from pipeline.modeling import registry, zoo

    vendor_dependent = (
        torch.nn.Dropout,
        torch.nn.TransformerEncoderLayer,
        torch.nn.MultiheadAttention,
        torch.nn.RNNBase,  # oneDNN kernels generated for the CPU found (pipeline/modeling/recurrent.py)
    )
    checked = 0
    for name in registry.names():
        spec = registry.get(name)
        if not spec.neural:
            continue
        module = registry.create(name, 7, 3, 20, {}, seed=0).module
        for sub in module.modules():
            assert not isinstance(sub, vendor_dependent), f"{name}: {type(sub).__name__}"
            assert type(sub) is not torch.nn.Conv1d, f"{name}: torch's Conv1d (oneDNN), not zoo.Conv1d"
        checked += 1
    assert checked >= 10
    torch.manual_seed(3)
    got = zoo.Dropout(0.25).train()(torch.ones(2000))
    torch.manual_seed(3)
    expected = (torch.rand(2000) >= 0.25).float() / 0.75
    assert torch.equal(got, expected)


MATMULS = """
from pipeline.modeling import numerics
numerics.pin(1)
import numpy as np, torch
from pipeline.modeling.kernels import product
g = torch.Generator().manual_seed(0)
a, b, c = torch.randn(70, 33, generator=g), torch.randn(33, 50, generator=g), torch.randn(50, generator=g)
x, y = torch.randn(4, 70, 33, generator=g), torch.randn(4, 33, 9, generator=g)
P = lambda u, v: torch.from_numpy(product(u.numpy(), v.numpy()))
assert torch.equal(a @ b, P(a, b))
assert not torch.equal(a @ b, torch.from_numpy(a.numpy() @ b.numpy()))  # not numpy's (OpenBLAS) order
assert torch.equal(torch.nn.functional.linear(a, b.T, c), P(a, b) + c)
assert torch.equal(torch.bmm(x, y), P(x, y))
assert torch.equal(x @ y, P(x, y))
w = b.clone().requires_grad_()
(a @ w).square().sum().backward()
assert torch.equal(w.grad, P(a.T.contiguous(), 2 * (a @ b)))
torch.testing.assert_close(a @ b, torch.from_numpy(a.numpy().astype(np.float64) @ b.numpy().astype(np.float64)).float())
i = torch.arange(12).reshape(3, 4)
assert torch.equal(i @ i.T, torch.from_numpy(i.numpy() @ i.numpy().T))  # integers: numpy, exact
print("ok")
"""


def test_matrix_products_run_on_our_own_product_kernel():
    """torch's mm, addmm and bmm (every nn.Linear, attention product, and their gradients) run on
    kernels.matmul once numerics.pin() has run: its bytes, not OpenBLAS's or MKL's."""
    res = subprocess.run(
        [sys.executable, "-c", MATMULS], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def run_stage(*args: str, env: dict[str, str]) -> None:
    full = {**{k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}, **env}
    full["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-m", "pipeline.stages", *args], env=full, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fingerprint(root, wdir, params, env) -> dict:
    out = {}
    for m in MODELS:
        common = ["--model", m, "--params", str(params), "--windows", str(wdir), "--models", str(root / "models")]
        run_stage("train", *common, "--reports", str(root / "reports"), env=env)
        run_stage("evaluate", *common, "--reports", str(root / "reports"), env=env)
        metrics = json.loads((root / "reports" / m / "metrics.json").read_text())
        metrics.pop("latency_ms")  # a timing, not a result
        log = tree_bytes(root / "reports" / m / "training")
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
                "train": {"models": list(MODELS), "epochs": 3, "patience": 3, "workers": 1},
                "hparams": {
                    "lstm_attn": {"hidden": 16},
                    "transformer": {"d_model": 16, "ff": 32, "layers": 1},
                },
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
            assert got[m][1] == reference[m][1], f"{m}: other training log with {name}"
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
        runs[-1]["training log"] = tree_bytes(root / "reports" / "gru" / "training")
    for f in runs[0]:
        assert runs[0][f] == runs[1][f], f
