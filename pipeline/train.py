"""`train` stage: fit one model of the zoo (or a baseline) on the windows, select on validation.

AdamW, a cosine learning-rate schedule with warm-up, label smoothing, inverse-frequency
class weights, gradient clipping, early stopping on validation macro-F1 (ties: lower validation loss) with patience. The
logged train macro-F1 is that of the epoch's own batch predictions (no extra pass).
Deterministic: seeded init and batch order, so the same data and params give the same
metrics. Writes ``models/<name>/{model.pt, config.json}`` and a per-epoch log
``reports/<name>/train_log.csv`` (epoch, train/val loss and macro-F1, lr, seconds).

Baselines: ``majority`` (the most frequent training class) and ``stats_lr`` (logistic
regression on per-window statistics); both are stored as JSON, never pickled.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import Params, TrainParams

log = logging.getLogger(__name__)
BASELINES = ("majority", "stats_lr")


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse class frequency, scaled to mean 1 (absent classes get weight 1)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 1.0)
    return (w / w.mean()).astype(np.float32)


def lr_at(epoch: int, cfg: TrainParams) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak (per epoch)."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    progress = (epoch - cfg.warmup_epochs) / span
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def window_stats(x: np.ndarray) -> np.ndarray:
    """Per-window statistics (mean, std, min, max, last - first of every feature): (N, 5F)."""
    return np.concatenate([x.mean(1), x.std(1), x.min(1), x.max(1), x[:, -1] - x[:, 0]], axis=1)


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def fit_torch(
    name: str, hparams: dict[str, Any], data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, cfg: TrainParams
) -> tuple[Any, list[dict[str, float]]]:
    """Train a zoo model; returns the best-on-validation model and the per-epoch log."""
    import torch
    from tqdm import tqdm

    from pipeline.models import create_model

    torch.manual_seed(cfg.seed)
    (xtr, ytr), (xva, yva) = data["train"], data["val"]
    device = torch.device(cfg.device)
    model = create_model(name, xtr.shape[2], n_classes, xtr.shape[1], **hparams).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = torch.tensor(class_weights(ytr, n_classes)) if cfg.class_weights else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing).to(device)
    xt, yt = torch.tensor(xtr, device=device), torch.tensor(ytr, device=device)
    xv, yv = torch.tensor(xva, device=device), torch.tensor(yva, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)
    best: tuple = ((-1.0, -np.inf), None, -1)  # ((val macro-F1, -val loss), state, epoch)
    history = []
    bar = tqdm(range(cfg.epochs), desc=f"train {name}", unit="epoch", disable=None)
    for epoch in bar:
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch, cfg)
        model.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        seen = torch.empty(len(xt), dtype=torch.long)  # predictions made while training (no extra pass)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            logits = model(xt[idx])
            loss = loss_fn(logits, yt[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.item() * len(idx)
            seen[idx] = logits.detach().argmax(1).cpu()
        model.eval()
        with torch.no_grad():
            va_logits = model(xv)
            row = {
                "epoch": epoch + 1,
                "train_loss": total / len(xt),
                "train_f1": macro_f1(ytr, seen.numpy(), n_classes),
                "val_loss": float(loss_fn(va_logits, yv)),
                "val_f1": macro_f1(yva, va_logits.argmax(1).cpu().numpy(), n_classes),
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
        history.append(row)
        bar.set_postfix(val_f1=f"{row['val_f1']:.3f}")
        score = (row["val_f1"], -row["val_loss"])  # ties on macro-F1 go to the lower validation loss
        if score > best[0]:
            best = (score, {k: v.detach().clone() for k, v in model.state_dict().items()}, epoch)
        elif epoch - best[2] >= cfg.patience:
            log.info("%s: early stop at epoch %d (best val macro-F1 %.3f at epoch %d)", name, epoch + 1, best[0][0],
                     best[2] + 1)  # fmt: skip
            break
    bar.close()
    model.load_state_dict(best[1])
    model.eval()
    return model, history


def fit_baseline(name: str, data: dict[str, tuple[np.ndarray, np.ndarray]], n_classes: int, cfg: TrainParams) -> dict:
    """A baseline as a JSON-able dict (no pickle): majority class or logistic regression on statistics."""
    xtr, ytr = data["train"]
    if name == "majority":
        return {"kind": "majority", "class": int(np.bincount(ytr, minlength=n_classes).argmax())}
    if name == "stats_lr":
        from sklearn.linear_model import LogisticRegression

        s = window_stats(xtr)
        mean, std = s.mean(0), s.std(0) + 1e-6
        clf = LogisticRegression(max_iter=3000, class_weight="balanced" if cfg.class_weights else None,
                                 random_state=cfg.seed).fit((s - mean) / std, ytr)  # fmt: skip
        coef = np.zeros((n_classes, s.shape[1]))
        intercept = np.full(n_classes, -1e9)
        coef[clf.classes_] = clf.coef_ if n_classes > 2 else np.vstack([-clf.coef_, clf.coef_])
        intercept[clf.classes_] = clf.intercept_ if n_classes > 2 else np.r_[-clf.intercept_, clf.intercept_]
        return {"kind": "stats_lr", "mean": mean.tolist(), "std": std.tolist(), "coef": coef.tolist(),
                "intercept": intercept.tolist()}  # fmt: skip
    raise KeyError(f"unknown baseline '{name}'; known: {list(BASELINES)}")


def baseline_logits(model: dict, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores (N, C) of a stored baseline."""
    if model["kind"] == "majority":
        out = np.zeros((len(x), n_classes))
        out[:, model["class"]] = 1.0
        return out
    s = (window_stats(x) - np.asarray(model["mean"])) / np.asarray(model["std"])
    return s @ np.asarray(model["coef"]).T + np.asarray(model["intercept"])


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Stage entry: train ``name`` on the windows; write the model and its per-epoch log."""
    import pandas as pd

    from pipeline.io import write_json
    from pipeline.windows import load_split

    if name not in params.train.models:
        raise KeyError(f"model '{name}' is not in params train.models {list(params.train.models)}")
    data, meta = {}, {}
    for sp in ("train", "val"):
        x, y, _, meta = load_split(windows_dir, sp)
        data[sp] = (x, y)
    n_classes = len(meta["classes"])
    out, rep = models_dir / name, reports_dir / name
    hparams = dict(params.hparams.get(name, {}))
    config = {"model": name, "n_features": len(meta["features"]), "n_classes": n_classes, "window": meta["window"],
              "features": meta["features"], "classes": meta["classes"], "hparams": hparams}  # fmt: skip
    if name in BASELINES:
        write_json(out / "baseline.json", fit_baseline(name, data, n_classes, params.train))
        write_json(out / "config.json", config)
        history = [{"epoch": 1, "train_f1": macro_f1(data["train"][1], predict(out, data["train"][0]).argmax(1),
                                                     n_classes)}]  # fmt: skip
    else:
        from pipeline.models import n_parameters, save

        model, history = fit_torch(name, hparams, data, n_classes, params.train)
        save(model, {**config, "parameters": n_parameters(model)}, out)
    from pipeline.io import atomic_path

    rep.mkdir(parents=True, exist_ok=True)
    with atomic_path(rep / "train_log.csv") as tmp:
        pd.DataFrame(history).round(6).to_csv(tmp, index=False)
    best = max(h.get("val_f1", h.get("train_f1", 0.0)) for h in history)
    return {"model": name, "epochs": len(history), "best_val_f1": round(best, 4)}


def predict_fn(model_dir: Path):
    """Load a trained model folder once; returns ``x (N, T, F) -> class scores (N, C)``."""
    cfg = json.loads((model_dir / "config.json").read_text())
    if (model_dir / "baseline.json").exists():
        base = json.loads((model_dir / "baseline.json").read_text())
        return lambda x: baseline_logits(base, x, cfg["n_classes"])
    import torch

    from pipeline.models import load

    model, _ = load(model_dir)

    def fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor(x)).numpy()

    return fn


def predict(model_dir: Path, x: np.ndarray) -> np.ndarray:
    """Class scores (N, C) from a trained model folder (zoo model or baseline)."""
    return predict_fn(model_dir)(x)
