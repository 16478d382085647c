"""Fingerprint of the numerical kernels the pipeline computes with, under its pinned numerics.

Every op is a small seeded computation of the kind features, statistics models, MiniRocket and
the neural zoo run (numpy transcendental loops and BLAS, scikit-learn fits, numba, torch
products, our recurrent kernels, the zoo's convolution, attention block and dropout, AdamW),
hashed to 16 hex digits. Because every kernel is pinned to code that does not depend on the CPU
(pipeline/core/cpu.py, pipeline/modeling/numerics.py), ONE reference serves every x86-64 CPU
with AVX2: an op whose hash differs from tests/data/numerics_reference.json is a kernel that
computes other bytes on this machine, so trained models would too.

    driver-pipeline fingerprint                      # print, compare with the reference
    driver-pipeline fingerprint --write REF.json     # (re)make a reference
"""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "tests" / "data" / "numerics_reference.json"


def _h(*arrays) -> str:
    import numpy as np

    s = hashlib.sha1()
    for a in arrays:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        s.update(np.ascontiguousarray(a).tobytes())
    return s.hexdigest()[:16]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numpy_ops(ops: dict[str, str]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x32 = rng.normal(size=(5000, 12)).astype(np.float32)
    x64 = x32.astype(np.float64)
    x32n = x32.copy()
    x32n[::7, 3] = np.nan
    ops["numpy.sum_f32"] = _h(x32.sum(0), x32.sum(1))
    ops["numpy.sum_f64"] = _h(x64.sum(0), x64.sum(1))
    ops["numpy.mean_std_f32"] = _h(x32.mean(0), x32.std(0))
    ops["numpy.nanmean_nanstd_f64"] = _h(np.nanmean(x32n, 0, dtype=np.float64), np.nanstd(x32n, 0, dtype=np.float64))
    ops["numpy.median"] = _h(np.median(x32, 0))
    ops["numpy.dot_f64 (BLAS)"] = _h(x64.T @ x64)
    ops["numpy.dot_f32 (BLAS)"] = _h(x32.T @ x32)
    ops["numpy.vdot_f64 (BLAS)"] = _h(np.array([x64[:, 0] @ x64[:, 1]]))
    ops["numpy.exp_log_f32"] = _h(np.exp(x32), np.log(np.abs(x32) + 1))
    ops["numpy.exp_log_f64"] = _h(np.exp(x64), np.log(np.abs(x64) + 1))
    ops["numpy.arctan2_sqrt"] = _h(np.arctan2(x32[:, 0], x32[:, 1]), np.sqrt(np.abs(x64)))
    ops["numpy.arctan2_hypot_f64"] = _h(np.arctan2(x64[:, 0], x64[:, 1]), np.hypot(x64[:, 2], x64[:, 3]))
    ops["numpy.linalg.lstsq"] = _h(np.linalg.lstsq(x64[:, :6], x64[:, 6], rcond=None)[0])
    ops["numpy.linalg.svd"] = _h(np.abs(np.linalg.svd(x64[:500], full_matrices=False)[0]))


def sklearn_ops(ops: dict[str, str]) -> None:
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, RidgeClassifierCV

    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 60))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=800) * 0.5 > 0.5).astype(int) + (X[:, 2] > 1)
    lr = LogisticRegression(max_iter=500).fit(X, y)
    ops["sklearn.logistic_regression"] = _h(lr.coef_, lr.intercept_)
    gbm = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)
    ops["sklearn.hist_gbm"] = _h(gbm.predict_proba(X))
    ridge = RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)).fit(X, y)  # MiniRocket's classifier
    ops["sklearn.ridge_cv"] = _h(ridge.coef_, ridge.intercept_)


def numba_ops(ops: dict[str, str]) -> None:
    import numpy as np
    from numba import njit

    from pipeline.modeling.baselines import _strict_kernels

    rng = np.random.default_rng(0)
    panel = rng.normal(size=(16, 12, 90)).astype(np.float32)  # MiniRocket: fit and transform, as trained
    fit, transform = _strict_kernels()
    params = fit(panel, 1000, 32, np.int32(0))
    ops["numba.minirocket"] = _h(*params, transform(panel, params))

    from pipeline.modeling import kernels

    @njit(cache=False)
    def activations(x):
        one = x.dtype.type(1)
        out = np.empty((3, x.shape[0]), x.dtype)
        for i in range(x.shape[0]):
            out[0, i], out[1, i], out[2, i] = kernels.exp(x[i]), kernels.sigmoid(x[i], one), kernels.tanh(x[i], one)
        return out

    x = np.concatenate([rng.normal(scale=4.0, size=4000), np.linspace(-120, 120, 1001), [-np.inf, np.inf, 0.0]])
    for dt in (np.float32, np.float64):
        ops[f"kernels.exp_sigmoid_tanh.{np.dtype(dt).name}"] = _h(activations(x.astype(dt)))
        a, b = rng.normal(size=(301, 77)).astype(dt), rng.normal(size=(77, 61)).astype(dt)
        out = np.empty((301, 61), dt)  # sizes off every tile: each row and column path
        kernels.matmul(a, b, out)
        ops[f"kernels.matmul.{np.dtype(dt).name}"] = _h(out)


def torch_ops(ops: dict[str, str]) -> None:
    import torch
    import torch.nn.functional as F

    from pipeline.modeling import zoo

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    a, b = r(256, 96), r(96, 160)
    ops["torch.mm"] = _h(a @ b)
    ops["torch.addmm"] = _h(F.linear(a, b.T, r(160)))
    ops["torch.bmm"] = _h(torch.bmm(r(8, 90, 32), r(8, 32, 90)))
    x = r(32, 90, 12).requires_grad_()
    from pipeline.modeling.recurrent import Recurrent

    for cell, bidirectional in (("gru", False), ("lstm", False), ("rnn", False), ("lstm", True)):
        torch.manual_seed(0)
        m = Recurrent(cell, 12, 32, bidirectional)
        out, state = m(x)
        (out.sum() + (state[1] if cell == "lstm" else state).square().sum()).backward()
        name = f"recurrent.{'bi' if bidirectional else ''}{cell}"
        ops[f"{name}.forward"] = _h(out)
        ops[f"{name}.backward"] = _h(x.grad, *[p.grad for p in m.parameters()])
        x.grad = None
    torch.manual_seed(0)
    conv = zoo.Conv1d(12, 64, 5, padding=2)
    y = conv.channels_last(x, (2, 2))  # as the models call it: (B, T, C)
    y.square().sum().backward()
    ops["zoo.conv1d.forward"] = _h(y)
    ops["zoo.conv1d.backward"] = _h(x.grad, conv.weight.grad, conv.bias.grad)
    x.grad = None
    bn = torch.nn.BatchNorm1d(64)
    rows = y.detach().reshape(-1, 64).requires_grad_()  # fcn: over windows x time, channels last
    z = bn(rows)
    z.square().sum().backward()
    ops["torch.batchnorm"] = _h(z, rows.grad, bn.weight.grad, bn.bias.grad)
    torch.manual_seed(0)
    block = zoo.EncoderBlock(32, 4, 64, 0.1).train()
    h = r(16, 90, 32).requires_grad_()
    out = block(h)
    out.square().sum().backward()
    ops["zoo.encoder_block.train"] = _h(out, h.grad, *[p.grad for p in block.parameters()])
    ops["zoo.encoder_block.eval"] = _h(block.eval()(h))
    torch.manual_seed(0)
    ops["zoo.dropout"] = _h(zoo.Dropout(0.2).train()(torch.ones(64, 90, 32)))
    ln = torch.nn.LayerNorm(32)
    ops["torch.layernorm"] = _h(ln(r(32, 90, 32)))
    z = r(64, 4)
    ops["torch.softmax"] = _h(torch.softmax(z, -1))
    ops["torch.cross_entropy"] = _h(F.cross_entropy(z, torch.arange(64) % 4, label_smoothing=0.1))
    ops["torch.exp_log_tanh"] = _h(torch.exp(z), torch.log(z.abs() + 1), torch.tanh(z), torch.sigmoid(z))
    ops["torch.sum_mean"] = _h(r(1000, 37).sum(0), r(1000, 37).mean(1))
    torch.manual_seed(0)
    ops["torch.randn_rand"] = _h(torch.randn(1000), torch.rand(1000), torch.randperm(1000))
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 16)
    opt = torch.optim.AdamW(lin.parameters(), lr=2e-3, weight_decay=0.01)
    for _ in range(5):
        opt.zero_grad()
        lin(a).square().mean().backward()
        torch.nn.utils.clip_grad_norm_(lin.parameters(), 1.0)
        opt.step()
    ops["torch.adamw_5_steps"] = _h(lin.weight, lin.bias)
    torch.manual_seed(0)
    model = zoo.gru(12, 4, 90, hidden=16).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(x.detach()), torch.arange(32) % 4).backward()
        opt.step()
    ops["zoo.gru_3_steps"] = _h(*model.parameters())


def fingerprint(threads: int = 1) -> dict:
    """Pin this process (before torch loads) and hash every op."""
    import os

    from pipeline.modeling import numerics

    numerics.pin(threads)
    ops: dict[str, str] = {}
    numpy_ops(ops)
    sklearn_ops(ops)
    numba_ops(ops)
    torch_ops(ops)
    env = {k: os.environ.get(k) for k in sorted(numerics.PINNED_ENV)}
    return {"cpu": cpu_name(), "env": env, "ops": ops}


def differences(got: dict, reference: dict) -> list[str]:
    """The ops whose bytes differ from (or are missing in) the reference."""
    ref = reference["ops"]
    return [k for k in sorted(set(got["ops"]) | set(ref)) if got["ops"].get(k) != ref.get(k)]
