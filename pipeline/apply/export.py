"""``export``: a trained model as one portable TorchScript file.

The file holds the model AND what it needs around it: the z-score fitted on its training
windows (applied inside, NaN = not observed -> the training mean, as the Predictor does), a
softmax, and as metadata (``driver_model.json`` inside the archive) its card (features, window,
classes, the baseline flag and the settings that measured its training video) and its
operating thresholds. Input: windows (N, T, F) float32 as the windows stage stores them (after
the driver baseline); output: class probabilities (N, C). Any TorchScript runtime loads it
(``torch.jit.load``; LibTorch in C++) and ``driver-pipeline monitor --model file.pt`` runs from it.

Neural models are traced; the statistics baselines (``stats_lr``, ``stats_gbm``: the boosted
trees walked level by level) and ``majority`` are written as TorchScript modules. MiniRocket's
transform is a numba kernel and cannot be exported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.apply.model import EXPORT_META, AppliedModel
from pipeline.core.errors import ModelError
from pipeline.core.files import atomic_path

if TYPE_CHECKING:
    import torch


def _modules():
    """The TorchScript-able modules (defined on first use: torch is imported lazily)."""
    import torch
    from torch import nn

    class Normalise(nn.Module):
        def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(np.asarray(mean, np.float32)))
            self.register_buffer("std", torch.tensor(np.asarray(std, np.float32)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = (x - self.mean) / self.std
            return torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)

    def stats(x: torch.Tensor) -> torch.Tensor:
        """pipeline.modeling.base.window_stats (N, 5F) to the bit: NumPy sums float32 over the time
        axis one step after the other (torch's own mean uses another order, which moved values across
        tree thresholds: measured 0.03 probability differences), so the sums are written out."""
        n_t = x.shape[1]
        total = x[:, 0].clone()
        for t in range(1, n_t):
            total = total + x[:, t]
        mean = total / n_t
        d = x - mean.unsqueeze(1)
        d = d * d
        sq = d[:, 0].clone()
        for t in range(1, n_t):
            sq = sq + d[:, t]
        std = torch.sqrt((sq / n_t).double()).float()  # torch.sqrt on float32 is not always correctly rounded
        return torch.cat([mean, std, x.amin(1), x.amax(1), x[:, -1] - x[:, 0]], dim=1).double()

    class Neural(nn.Module):
        def __init__(self, norm: nn.Module, core: nn.Module) -> None:
            super().__init__()
            self.norm, self.core = norm, core

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.core(self.norm(x)), dim=1)

    class Linear(nn.Module):  # stats_lr: logistic regression on standardised window statistics
        def __init__(self, norm: nn.Module, state: dict) -> None:
            super().__init__()
            self.norm = norm
            self.register_buffer("s_mean", torch.tensor(state["mean"], dtype=torch.float64))
            self.register_buffer("s_std", torch.tensor(state["std"], dtype=torch.float64))
            self.register_buffer("coef", torch.tensor(state["coef"], dtype=torch.float64))
            self.register_buffer("intercept", torch.tensor(state["intercept"], dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (stats(self.norm(x)) - self.s_mean) / self.s_std
            return torch.softmax(s @ self.coef.t() + self.intercept, dim=1)

    class Forest(nn.Module):  # stats_gbm: every tree walked together, one level per step
        def __init__(self, norm: nn.Module, model) -> None:
            super().__init__()
            from pipeline.modeling.baselines import _Forest

            st = model.state
            f = _Forest.pack(st["trees"])
            self.norm = norm
            for name in ("feat", "left", "right", "roots"):
                self.register_buffer(name, torch.tensor(getattr(f, name), dtype=torch.int64))
            self.register_buffer("thr", torch.tensor(f.thr, dtype=torch.float64))
            self.register_buffer("leaf", torch.tensor(f.leaf, dtype=torch.bool))
            self.register_buffer("nan_left", torch.tensor(f.nan_left, dtype=torch.bool))
            self.register_buffer("value", torch.tensor(f.value, dtype=torch.float64))
            self.register_buffer("baseline", torch.tensor(st["baseline"], dtype=torch.float64))
            self.register_buffer("cls", torch.tensor(st["classes"], dtype=torch.int64))
            self.n_out = len(st["trees"][0]) if st["trees"] else len(st["baseline"])
            self.n_classes = model.n_classes
            self.depth = _depth(f)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = stats(self.norm(x))
            n = s.shape[0]
            node = self.roots.unsqueeze(0).expand(n, self.roots.shape[0])
            for _ in range(self.depth):
                v = torch.gather(s, 1, self.feat[node])
                go_left = torch.where(torch.isnan(v), self.nan_left[node], v <= self.thr[node])
                nxt = torch.where(go_left, self.left[node], self.right[node])
                node = torch.where(self.leaf[node], node, nxt)
            values = self.value[node].reshape(n, -1, self.n_out)
            raw = self.baseline.unsqueeze(0).expand(n, self.n_out).clone()
            for i in range(values.shape[1]):  # summed in boosting order, as scikit-learn does
                raw = raw + values[:, i]
            if self.n_out == 1:
                raw = torch.cat([torch.zeros_like(raw), raw], dim=1)
            out = torch.full((n, self.n_classes), -1e9, dtype=torch.float64)
            out[:, self.cls] = raw
            return torch.softmax(out, dim=1)

    class Constant(nn.Module):  # majority
        def __init__(self, n_classes: int, cls: int) -> None:
            super().__init__()
            p = torch.softmax(torch.nn.functional.one_hot(torch.tensor(cls), n_classes).double(), dim=0)
            self.register_buffer("p", p)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.p.unsqueeze(0).expand(x.shape[0], self.p.shape[0]).clone()

    return Normalise, Neural, Linear, Forest, Constant


def _depth(f) -> int:
    """Levels of the deepest tree (steps the level-by-level walk needs)."""
    depth = np.zeros(len(f.value), np.int64)
    for r in f.roots:  # breadth-first per tree
        stack = [(int(r), 0)]
        while stack:
            n, d = stack.pop()
            depth[n] = d
            if not f.leaf[n]:
                stack += [(int(f.left[n]), d + 1), (int(f.right[n]), d + 1)]
    return int(depth.max()) if len(depth) else 0


def build(model_dir: Path) -> torch.jit.ScriptModule:
    """The TorchScript module of a trained model folder."""
    import torch

    from pipeline.modeling.predictor import Predictor

    pred = Predictor.load(model_dir)
    card = pred.card
    Normalise, Neural, Linear, Forest, Constant = _modules()
    norm = Normalise(np.asarray(pred.normaliser.mean), np.asarray(pred.normaliser.std))
    kind = card.model
    if pred.spec.neural:
        wrapper = Neural(norm, pred.model.module.eval()).eval()
        example = torch.zeros(2, card.window, card.n_features)
        with torch.no_grad():
            return torch.jit.trace(wrapper, example, check_trace=False)
    if kind == "stats_lr":
        return torch.jit.script(Linear(norm, pred.model.state))
    if kind == "stats_gbm":
        return torch.jit.script(Forest(norm, pred.model))
    if kind == "majority":
        return torch.jit.script(Constant(card.n_classes, pred.model.cls))
    raise ModelError(
        f"model '{kind}' cannot be exported (its transform is not a torch operation); export a neural model "
        "or stats_gbm / stats_lr"
    )


def export(model: AppliedModel, model_dir: Path, out: Path) -> dict:
    """Write the TorchScript file with the model's metadata; returns a summary."""
    import torch

    module = build(model_dir)
    meta = json.dumps(model.export_meta(), sort_keys=True)
    with atomic_path(out, keep_suffix=True) as tmp:
        torch.jit.save(module, str(tmp), _extra_files={EXPORT_META: meta})
    return {"model": model.name, "out": str(out), "bytes": out.stat().st_size}


def parity(model: AppliedModel, exported: Path, windows_dir: Path, limit: int = 2000) -> dict:
    """Largest |difference| between the exported file's probabilities and the trained model's on
    (up to ``limit``, evenly spaced) stored windows."""
    from pipeline.apply.model import from_export
    from pipeline.contracts.windows import sample_windows

    x, _, _, meta = sample_windows(windows_dir)
    model.card.check_windows(meta, str(windows_dir))
    rows = np.linspace(0, len(x) - 1, min(limit, len(x))).astype(np.int64)
    a = model.proba(x[rows])
    b = from_export(exported).proba(x[rows])
    return {"windows": len(rows), "max_abs_diff": float(np.abs(a - b).max())}
