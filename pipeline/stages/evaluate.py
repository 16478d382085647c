"""`evaluate` stage: metrics, operating points and explanations for one trained model.

Writes ``reports/models/<model>/``: ``metrics.json`` (DVC metrics: macro-F1 and accuracy
per split, the train-val gap, per-class precision/recall/F1/support, operating points,
expected calibration error, parameters, CPU latency), ``confusion_test.csv`` (DVC plot),
``figures/{confusion,pr_curves}.png``, ``wrong.csv`` (the most confidently wrong test
windows, with video and time so a reviewer can open the clip), and, for models that have
them, Integrated Gradients maps (``figures/ig_*.png``, importance in metrics.json) and
attention plots (``figures/attention.png``). Every metric comes from scikit-learn.

The model is loaded once (:class:`~pipeline.modeling.predictor.Predictor`); everything is
computed first (:func:`evaluate`), then drawn (:func:`draw`) and written.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts.windows import SPLITS, load_split
from pipeline.core.config import Params, load_params
from pipeline.core.files import atomic_path, write_json
from pipeline.core.runtime import ModelName, ModelsDir, ParamsOpt, ReportsDir, WindowsDir, run_stage
from pipeline.modeling import numerics
from pipeline.modeling.predictor import Predictor

log = logging.getLogger(__name__)


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


@dataclass
class Explanations:
    """What the figures of a model's explanations are drawn from (computed once)."""

    pick: np.ndarray  # indices of the explained test windows
    attr: np.ndarray | None = None  # (n, T, F) |IG| of the predicted class
    attention: np.ndarray | None = None  # (N_test, T)


@dataclass
class Evaluation:
    """Everything the stage computes for one model; :func:`draw` and :func:`write` only read it."""

    name: str
    classes: list[str]
    features: list[str]
    metrics: dict[str, Any]
    y_test: np.ndarray
    p_test: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    wrong: pd.DataFrame
    explained: Explanations | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def explain(predictor: Predictor, x: np.ndarray, pred: np.ndarray, max_windows: int) -> Explanations:
    """IG attributions of the predicted class on a fixed sample of windows, and attention weights."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(x))[:max_windows])
    return Explanations(pick, predictor.attributions(x[pick], pred[pick]), predictor.attention(x))


def explanation_metrics(e: Explanations, y: np.ndarray, pred: np.ndarray, classes: list[str], feats: list[str]):
    out: dict[str, Any] = {}
    if e.attr is not None:
        importance = e.attr.mean(axis=(0, 1))
        importance = importance / max(importance.sum(), 1e-12)
        out["feature_importance"] = dict(zip(feats, importance.round(5).tolist(), strict=True))
    if e.attention is not None:
        out["attention_peak_step"] = {
            c: int(e.attention[y == k].mean(0).argmax()) for k, c in enumerate(classes) if (y == k).any()
        }
    return out


def test_intervals(y: np.ndarray, prob: np.ndarray, index: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """95% intervals of test macro-F1 and per-class precision/recall from resampling test subjects."""
    from pipeline.evaluation.intervals import subject_bootstrap

    res = subject_bootstrap(y, prob.argmax(1), index["subject"].to_numpy(), classes)
    return {
        "method": "bootstrap over test subjects, 2000 replicates, 95% percentile",
        "subjects": res["subjects"],
        "macro_f1": res["macro_f1"].as_dict(),
        "per_class": {c: {k: iv.as_dict() for k, iv in pc.items()} for c, pc in res["per_class"].items()},
    }


def evaluate(predictor: Predictor, data: dict[str, tuple], params: Params) -> Evaluation:
    """Score every split, pick the operating points, explain the test split: no drawing, no files."""
    meta = data["test"][3]
    predictor.card.check_windows(meta, "the windows")
    classes, feats = list(meta["classes"]), list(meta["features"])
    probs = {sp: predictor.proba(data[sp][0]) for sp in SPLITS}
    metrics: dict[str, Any] = {sp: split_metrics(data[sp][1], probs[sp], classes) for sp in SPLITS}
    metrics["gap"] = metrics["train"]["macro_f1"] - metrics["val"]["macro_f1"]
    metrics["test"]["interval"] = test_intervals(data["test"][1], probs["test"], data["test"][2], classes)
    x_test, y_test, p_test = data["test"][0], data["test"][1], probs["test"]
    ev = params.evaluate
    metrics["operating_points"], curves = operating_points(
        y_test, p_test, classes, ev.alert_precision, ev.report_recall
    )
    metrics["ece"] = expected_calibration_error(y_test, p_test)
    metrics["latency_ms"] = predictor.latency_ms(x_test)
    metrics["parameters"] = predictor.n_parameters()
    pred = p_test.argmax(1)
    explained = None
    if predictor.spec.neural or predictor.spec.attention:
        explained = explain(predictor, x_test, pred, ev.explain_windows)
        metrics["explanations"] = explanation_metrics(explained, y_test, pred, classes, feats)
    wrong = confidently_wrong(data["test"][2], y_test, p_test, classes)
    return Evaluation(predictor.card.model, classes, feats, metrics, y_test, p_test, curves, wrong, explained)


# --- drawing (reads an Evaluation, computes nothing) -------------------------------------------
def draw(e: Evaluation, fig_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    _confusion(plt, e, fig_dir / "confusion.png")
    _pr_curves(plt, e, fig_dir / "pr_curves.png")
    if e.explained is not None and e.explained.attr is not None:
        _ig_maps(plt, e, fig_dir / "ig_maps.png")
        _ig_importance(plt, e, fig_dir / "ig_importance.png")
    if e.explained is not None and e.explained.attention is not None:
        _attention(plt, e, fig_dir / "attention.png")


def _save(plt, fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _confusion(plt, e: Evaluation, path: Path) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    labels = list(range(len(e.classes)))
    ConfusionMatrixDisplay.from_predictions(
        e.y_test, e.p_test.argmax(1), labels=labels, display_labels=e.classes, ax=ax, colorbar=False
    )
    ax.set_title(f"{e.name}: test confusion matrix", fontsize=9)
    _save(plt, fig, path)


def _pr_curves(plt, e: Evaluation, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    points = e.metrics["operating_points"]
    for k, c in enumerate(e.classes):
        if c not in e.curves:
            continue
        p, r = e.curves[c]
        ax.plot(r, p, color=f"C{k}", label=c)
        for kind, marker in (("alert", "o"), ("report", "s")):
            pt = points[c][kind]
            if pt:
                ax.plot(pt["recall"], pt["precision"], marker, color=f"C{k}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{e.name}: test PR curves (o alert, s report)", fontsize=9)
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def _ig_maps(plt, e: Evaluation, path: Path) -> None:
    assert e.explained is not None and e.explained.attr is not None
    pick, attr = e.explained.pick, e.explained.attr
    y, pred = e.y_test[pick], e.p_test.argmax(1)[pick]
    feats = e.features
    fig, axes = plt.subplots(2, len(e.classes), figsize=(3.2 * len(e.classes), 5.5), squeeze=False)
    for k, c in enumerate(e.classes):
        for row, (title, mask) in enumerate((("correct", (y == k) & (pred == k)), ("wrong", (y == k) & (pred != k)))):
            ax = axes[row, k]
            if mask.any():
                ax.imshow(attr[mask].mean(0).T, aspect="auto", cmap="magma")
            ax.set_title(f"{c}: {title} (n={int(mask.sum())})", fontsize=8)
            ax.set_yticks(range(len(feats)), feats if k == 0 else [""] * len(feats), fontsize=6)
            ax.set_xlabel("time step", fontsize=7)
    fig.suptitle(f"{e.name}: Integrated Gradients |attribution| by class (rows: correct, wrong)", fontsize=9)
    _save(plt, fig, path)


def _ig_importance(plt, e: Evaluation, path: Path) -> None:
    imp = e.metrics["explanations"]["feature_importance"]
    names = sorted(imp, key=imp.get)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.barh(names, [imp[n] for n in names])
    ax.set_title(f"{e.name}: global feature importance (IG)", fontsize=9)
    _save(plt, fig, path)


def _attention(plt, e: Evaluation, path: Path) -> None:
    assert e.explained is not None and e.explained.attention is not None
    w, y, pred = e.explained.attention, e.y_test, e.p_test.argmax(1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    for k, c in enumerate(e.classes):
        for style, mask in (("-", (y == k) & (pred == k)), (":", (y == k) & (pred != k))):
            if mask.any():
                label = f"{c} {'ok' if style == '-' else 'wrong'}"
                axes[0].plot(w[mask].mean(0), style, color=f"C{k}", label=label)
    axes[0].set_title("mean attention over time (solid: correct, dotted: wrong)", fontsize=8)
    axes[0].set_xlabel("time step", fontsize=7)
    axes[0].legend(fontsize=6)
    step = max(1, w.shape[1] // 30)
    steps = np.arange(0, w.shape[1], step)
    axes[1].boxplot(w[:, steps], positions=steps, widths=step * 0.6, showfliers=False)
    axes[1].set_xticks(steps[::5], steps[::5])
    axes[1].set_xlabel("time step", fontsize=7)
    axes[1].set_title(f"attention per time step over the test set (every {step} steps)", fontsize=8)
    _save(plt, fig, path)


# --- writing -------------------------------------------------------------------------------------
def write(e: Evaluation, out: Path) -> None:
    names = np.asarray(e.classes)
    cm = pd.DataFrame({"actual": names[e.y_test], "predicted": names[e.p_test.argmax(1)]})
    with atomic_path(out / "confusion_test.csv") as tmp:
        cm.to_csv(tmp, index=False)
    with atomic_path(out / "wrong.csv") as tmp:
        e.wrong.to_csv(tmp, index=False)
    write_json(out / "metrics.json", _round(e.metrics))


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Evaluate one trained model on every split and explain it."""
    predictor = Predictor.load(models_dir / name)
    data = {sp: load_split(windows_dir, sp) for sp in SPLITS}
    log.info("evaluate %s on %s windows", name, ", ".join(f"{sp} {len(data[sp][1])}" for sp in SPLITS))
    e = evaluate(predictor, data, params)
    out = reports_dir / name
    draw(e, out / "figures")
    write(e, out)
    return {"model": name, **{f"{sp}_f1": round(e.metrics[sp]["macro_f1"], 4) for sp in SPLITS}}


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 5)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def main(
    model: ModelName,
    params: ParamsOpt = Path("params.yaml"),
    windows_dir: WindowsDir = Path("data/windows"),
    models_dir: ModelsDir = Path("models"),
    reports_dir: ReportsDir = Path("reports/models"),
) -> None:
    """Metrics, operating points and explanations for one trained model."""

    def work() -> dict:
        p = load_params(params)
        numerics.pin(p.train.threads)
        return run(p, model, windows_dir, models_dir, reports_dir)

    run_stage(work)
