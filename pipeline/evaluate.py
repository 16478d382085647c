"""`evaluate` stage: metrics, operating points and explanations for one trained model.

Writes ``reports/<model>/``: ``metrics.json`` (DVC metrics: macro-F1 and accuracy per
split, the train-val gap, per-class precision/recall/F1/support, operating points,
expected calibration error, parameters, CPU latency), ``confusion_test.csv`` (DVC
plot), ``figures/{confusion,pr_curves}.png``, ``wrong.csv`` (the most confidently wrong
test windows, with video and time so a reviewer can open the clip), and for neural
models Integrated Gradients maps (``figures/ig_*.png``, importance in metrics.json) and,
for attention models, ``figures/attention.png``. Every metric comes from scikit-learn.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import Params

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf, pred = prob.max(1), prob.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(ece)


def operating_points(y: np.ndarray, prob: np.ndarray, classes: list[str], min_precision: float, min_recall: float):
    """Per class, from the one-vs-rest precision-recall curve on the test split:

    * ``alert``: the highest recall with precision >= ``min_precision`` (real-time alerting);
    * ``report``: the highest precision with recall >= ``min_recall`` (post-hoc reporting).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    out, curves = {}, {}
    for k, c in enumerate(classes):
        target = (y == k).astype(int)
        if target.sum() == 0:
            out[c] = {"average_precision": None, "alert": None, "report": None}
            continue
        p, r, t = precision_recall_curve(target, prob[:, k])
        curves[c] = (p, r)
        p, r = p[:-1], r[:-1]  # the last point has no threshold

        out[c] = {
            "average_precision": float(average_precision_score(target, prob[:, k])),
            "alert": _pick(p >= min_precision, r, p, p, r, t),
            "report": _pick(r >= min_recall, p, r, p, r, t),
        }
    return out, curves


def _pick(
    mask: np.ndarray, key: np.ndarray, tie: np.ndarray, p: np.ndarray, r: np.ndarray, t: np.ndarray
) -> dict | None:
    """The point maximising ``key`` (ties: ``tie``) among those where ``mask`` holds (None if none)."""
    if not mask.any():
        return None
    idx = np.flatnonzero(mask)
    i = idx[np.lexsort((tie[idx], key[idx]))[-1]]
    return {"threshold": float(t[i]), "precision": float(p[i]), "recall": float(r[i])}


def latency_ms(model_dir: Path, x: np.ndarray, repeats: int = 50) -> float:
    """Median CPU time to classify ONE window (batch of 1), after warm-up."""
    from pipeline.train import predict_fn

    fn = predict_fn(model_dir)
    one = x[:1]
    for _ in range(5):
        fn(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(one)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def split_metrics(y: np.ndarray, prob: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    pred = prob.argmax(1)
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y, pred)),
        "per_class": {
            c: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, c in enumerate(classes)
        },
    }


def confidently_wrong(index: pd.DataFrame, y: np.ndarray, prob: np.ndarray, classes: list[str], n: int = 10):
    """The ``n`` test windows the model got wrong with the highest confidence."""
    pred = prob.argmax(1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-prob[wrong, pred[wrong]], kind="stable")][:n]
    cols = ["window_id", "video", "subject", "start_t", "end_t"]
    out = index.iloc[order][cols].reset_index(drop=True)
    out["true"] = np.asarray(classes)[y[order]]
    out["predicted"] = np.asarray(classes)[pred[order]]
    out["confidence"] = prob[order, pred[order]].round(4)
    return out


# --- explanations ----------------------------------------------------------------------------
def integrated_gradients(model, x: np.ndarray, target: np.ndarray, steps: int = 32) -> np.ndarray:
    """|IG| attributions (N, T, F) against an all-zero baseline (= the training mean)."""
    import torch
    from captum.attr import IntegratedGradients

    model.eval()
    ig = IntegratedGradients(lambda inp: model(inp))
    xt = torch.tensor(x, requires_grad=True)
    attr = ig.attribute(xt, baselines=torch.zeros_like(xt), target=torch.tensor(target), n_steps=steps,
                        internal_batch_size=64)  # fmt: skip
    return attr.detach().abs().numpy()


def explain(model_dir: Path, x: np.ndarray, y: np.ndarray, prob: np.ndarray, meta: dict, out: Path,
            max_windows: int = 200) -> dict:  # fmt: skip
    """IG maps per class (correct / wrong), global feature importance, attention plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from pipeline.models import ATTENTION_MODELS, load

    model, cfg = load(model_dir)
    classes, feats = meta["classes"], meta["features"]
    pred = prob.argmax(1)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(x))[:max_windows])
    attr = integrated_gradients(model, x[pick], pred[pick])  # explain what the model predicted
    importance = attr.mean(axis=(0, 1))
    importance = importance / max(importance.sum(), 1e-12)
    result = {"feature_importance": dict(zip(feats, importance.round(5).tolist(), strict=True))}
    fig, axes = plt.subplots(2, len(classes), figsize=(3.2 * len(classes), 5.5), squeeze=False)
    for k, c in enumerate(classes):
        for row, (title, mask) in enumerate((("correct", (y[pick] == k) & (pred[pick] == k)),
                                             ("wrong", (y[pick] == k) & (pred[pick] != k)))):  # fmt: skip
            ax = axes[row, k]
            if mask.any():
                ax.imshow(attr[mask].mean(0).T, aspect="auto", cmap="magma")
            ax.set_title(f"{c}: {title} (n={int(mask.sum())})", fontsize=8)
            ax.set_yticks(range(len(feats)), feats if k == 0 else [""] * len(feats), fontsize=6)
            ax.set_xlabel("time step", fontsize=7)
    fig.suptitle(f"{cfg['model']}: Integrated Gradients |attribution| by class (rows: correct, wrong)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "figures" / "ig_maps.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    order = np.argsort(importance)
    ax.barh(np.asarray(feats)[order], importance[order])
    ax.set_title(f"{cfg['model']}: global feature importance (IG)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "figures" / "ig_importance.png", dpi=90)
    plt.close(fig)
    if cfg["model"] in ATTENTION_MODELS:
        with torch.no_grad():
            _, w = model(torch.tensor(x), return_attention=True)
        w = w.numpy()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        for k, c in enumerate(classes):
            for style, mask in (("-", (y == k) & (pred == k)), (":", (y == k) & (pred != k))):
                if mask.any():
                    axes[0].plot(
                        w[mask].mean(0), style, color=f"C{k}", label=f"{c} {'ok' if style == '-' else 'wrong'}"
                    )
        axes[0].set_title("mean attention over time (solid: correct, dotted: wrong)", fontsize=8)
        axes[0].set_xlabel("time step", fontsize=7)
        axes[0].legend(fontsize=6)
        step = max(1, w.shape[1] // 30)
        steps = np.arange(0, w.shape[1], step)
        axes[1].boxplot(w[:, steps], positions=steps, widths=step * 0.6, showfliers=False)
        axes[1].set_xticks(steps[::5], steps[::5])
        axes[1].set_xlabel("time step", fontsize=7)
        axes[1].set_title(f"attention per time step over the test set (every {step} steps)", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "figures" / "attention.png", dpi=90)
        plt.close(fig)
        result["attention_peak_step"] = {c: int(w[y == k].mean(0).argmax()) for k, c in enumerate(classes)
                                         if (y == k).any()}  # fmt: skip
    return result


def plots(y: np.ndarray, prob: np.ndarray, classes: list[str], curves: dict, points: dict, name: str, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ConfusionMatrixDisplay.from_predictions(y, prob.argmax(1), labels=list(range(len(classes))),
                                            display_labels=classes, ax=ax, colorbar=False)  # fmt: skip
    ax.set_title(f"{name}: test confusion matrix", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "figures" / "confusion.png", dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for k, c in enumerate(classes):
        if c not in curves:
            continue
        p, r = curves[c]
        ax.plot(r, p, color=f"C{k}", label=c)
        for kind, marker in (("alert", "o"), ("report", "s")):
            pt = points[c][kind]
            if pt:
                ax.plot(pt["recall"], pt["precision"], marker, color=f"C{k}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{name}: test PR curves (o alert, s report)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "pr_curves.png", dpi=90)
    plt.close(fig)


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Stage entry: evaluate one trained model on every split and explain it."""
    from pipeline.io import atomic_path, write_json
    from pipeline.models import n_parameters
    from pipeline.train import BASELINES, predict
    from pipeline.windows import load_split

    model_dir, out = models_dir / name, reports_dir / name
    (out / "figures").mkdir(parents=True, exist_ok=True)
    data = {sp: load_split(windows_dir, sp) for sp in SPLITS}
    meta = data["test"][3]
    classes = meta["classes"]
    probs = {sp: softmax(predict(model_dir, data[sp][0])) for sp in SPLITS}
    metrics: dict[str, Any] = {sp: split_metrics(data[sp][1], probs[sp], classes) for sp in SPLITS}
    metrics["gap"] = metrics["train"]["macro_f1"] - metrics["val"]["macro_f1"]
    y_test, p_test = data["test"][1], probs["test"]
    ev = params.evaluate
    metrics["operating_points"], curves = operating_points(y_test, p_test, classes, ev.alert_precision,
                                                           ev.report_recall)  # fmt: skip
    metrics["ece"] = expected_calibration_error(y_test, p_test)
    metrics["latency_ms"] = latency_ms(model_dir, data["test"][0])
    cfg = json.loads((model_dir / "config.json").read_text())
    metrics["parameters"] = cfg.get("parameters", 0) if name not in BASELINES else 0
    if name not in BASELINES:
        from pipeline.models import load

        metrics["parameters"] = n_parameters(load(model_dir)[0])
        metrics["explanations"] = explain(model_dir, data["test"][0], y_test, p_test, meta, out,
                                          ev.explain_windows)  # fmt: skip
    plots(y_test, p_test, classes, curves, metrics["operating_points"], name, out)
    cm = pd.DataFrame({"actual": np.asarray(classes)[y_test], "predicted": np.asarray(classes)[p_test.argmax(1)]})
    with atomic_path(out / "confusion_test.csv") as tmp:
        cm.to_csv(tmp, index=False)
    wrong = confidently_wrong(data["test"][2], y_test, p_test, classes)
    with atomic_path(out / "wrong.csv") as tmp:
        wrong.to_csv(tmp, index=False)
    write_json(out / "metrics.json", _round(metrics))
    return {"model": name, **{f"{sp}_f1": round(metrics[sp]["macro_f1"], 4) for sp in SPLITS}}


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 5)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj
