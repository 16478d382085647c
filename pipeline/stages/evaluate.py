"""`evaluate` stage: cross-validated metrics, operating points and explanations for one model.

Scores come from the model's out-of-fold predictions (``models/<model>/oof.parquet``: every
window scored by a fold model that never saw its subject), pooled over the folds. Writes
``reports/models/<model>/``: ``metrics.json`` (DVC metrics: ``cv`` macro-F1 and accuracy
with a 95% subject-bootstrap interval, per-class precision/recall/F1 with intervals, per-fold
scores, the train-test gap, operating points with intervals, expected calibration error,
parameters, CPU latency of the final model), ``confusion_cv.csv`` (DVC plot),
``figures/{confusion,pr_curves}.png``, ``wrong.csv`` (the most confidently wrong windows,
with video, subject and time so a reviewer can open the clip), and, for models that have
them, Integrated Gradients maps and attention plots of the final model (``figures/``).
Every metric comes from scikit-learn or pipeline/evaluation/intervals.py.

Everything is computed first (:func:`evaluate`), then drawn (:func:`draw`) and written.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts.predictions import read_oof
from pipeline.contracts.windows import sample_windows
from pipeline.core.config import Params, load_params
from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, read_json, write_json
from pipeline.core.runtime import ModelName, ModelsDir, ParamsOpt, ReportsDir, WindowsDir, run_stage
from pipeline.modeling import numerics, registry
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


def operating_points(
    y: np.ndarray, prob: np.ndarray, classes: list[str], min_precision: float, min_recall: float, subjects: np.ndarray
):
    """Per class, from the one-vs-rest precision-recall curve of the out-of-fold predictions:

    * ``alert``: the highest recall with precision >= ``min_precision`` (real-time alerting);
    * ``report``: the highest precision with recall >= ``min_recall`` (post-hoc reporting);

    each with 95% subject-bootstrap intervals of its precision and recall at that threshold.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    from pipeline.evaluation.intervals import threshold_bootstrap

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
        for mode in ("alert", "report"):
            pt = out[c][mode]
            if pt is not None:
                ivs = threshold_bootstrap(target, prob[:, k], pt["threshold"], subjects)
                pt["interval"] = {m: iv.as_dict() for m, iv in ivs.items()}
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
    """The ``n`` windows the model got wrong (out of fold) with the highest confidence."""
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

    pick: np.ndarray  # indices of the explained windows
    y: np.ndarray  # their true classes
    pred: np.ndarray  # and the final model's predictions
    attr: np.ndarray | None = None  # (n, T, F) |IG| of the predicted class
    attention: np.ndarray | None = None  # (n, T)


@dataclass
class Evaluation:
    """Everything the stage computes for one model; :func:`draw` and :func:`write` only read it."""

    name: str
    classes: list[str]
    features: list[str]
    metrics: dict[str, Any]
    y: np.ndarray  # true classes of every window
    proba: np.ndarray  # out-of-fold probabilities
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    wrong: pd.DataFrame
    explained: Explanations | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def explain(predictor: Predictor, x: np.ndarray, y: np.ndarray, max_windows: int) -> Explanations:
    """IG attributions of the final model's predicted class and its attention weights, on a fixed
    sample of windows (windows the final model was trained on: this shows what it looks at, not
    how well it does; scores come from the out-of-fold predictions)."""
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(x))[:max_windows])
    xs = x[pick]
    pred = predictor.proba(xs).argmax(1)
    return Explanations(pick, y[pick], pred, predictor.attributions(xs, pred), predictor.attention(xs))


def explanation_metrics(e: Explanations, classes: list[str], feats: list[str]):
    out: dict[str, Any] = {}
    if e.attr is not None:
        importance = e.attr.mean(axis=(0, 1))
        importance = importance / max(importance.sum(), 1e-12)
        out["feature_importance"] = dict(zip(feats, importance.round(5).tolist(), strict=True))
    if e.attention is not None:
        out["attention_peak_step"] = {
            c: int(e.attention[e.y == k].mean(0).argmax()) for k, c in enumerate(classes) if (e.y == k).any()
        }
    return out


def cv_intervals(y: np.ndarray, prob: np.ndarray, subjects: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """95% intervals of macro-F1 and per-class precision/recall from resampling subjects."""
    from pipeline.evaluation.intervals import subject_bootstrap

    res = subject_bootstrap(y, prob.argmax(1), subjects, classes)
    return {
        "method": "bootstrap over subjects, 2000 replicates, 95% percentile",
        "subjects": res["subjects"],
        "macro_f1": res["macro_f1"].as_dict(),
        "per_class": {c: {k: iv.as_dict() for k, iv in pc.items()} for c, pc in res["per_class"].items()},
    }


def evaluate(predictor: Predictor, oof: tuple, folds: dict, windows: tuple, params: Params) -> Evaluation:
    """Score the pooled out-of-fold predictions, pick the operating points, explain the final
    model: no drawing, no files."""
    y, proba, index, classes = oof
    x, wy, windex, meta = windows
    predictor.card.check_windows(meta, "the windows")
    if len(windex) != len(index) or not (windex["window_id"].to_numpy() == index["window_id"].to_numpy()).all():
        raise DataError(
            f"the out-of-fold predictions of '{predictor.card.model}' are not for these windows; "
            f"retrain it (dvc repro train@{predictor.card.model})"
        )
    feats = list(meta["features"])
    subjects = index["subject"].astype(str).to_numpy()
    cv = split_metrics(y, proba, classes)
    cv["interval"] = cv_intervals(y, proba, subjects, classes)
    cv["per_fold"] = {
        str(f["fold"]): {k: f[k] for k in ("test_f1", "train_f1", "best_epoch", "subjects")} for f in folds["folds"]
    }
    metrics: dict[str, Any] = {"cv": cv}
    if "tuning" in folds:  # hyper-parameters chosen inside the folds: what was tuned, what it cost
        metrics["tuning"] = folds["tuning"]
    metrics["gap"] = float(np.mean([f["train_f1"] - f["test_f1"] for f in folds["folds"]]))
    ev = params.evaluate
    metrics["operating_points"], curves = operating_points(
        y, proba, classes, ev.alert_precision, ev.report_recall, subjects
    )
    metrics["ece"] = expected_calibration_error(y, proba)
    metrics["latency_ms"] = predictor.latency_ms(x)
    metrics["parameters"] = predictor.n_parameters()
    metrics["final_epochs"] = predictor.card.epochs
    explained = None
    if predictor.spec.neural or predictor.spec.attention:
        explained = explain(predictor, x, wy, ev.explain_windows)
        metrics["explanations"] = explanation_metrics(explained, classes, feats)
    wrong = confidently_wrong(index, y, proba, classes)
    return Evaluation(predictor.card.model, classes, feats, metrics, y, proba, curves, wrong, explained)


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
        e.y, e.proba.argmax(1), labels=labels, display_labels=e.classes, ax=ax, colorbar=False
    )
    ax.set_title(f"{e.name}: out-of-fold confusion matrix", fontsize=9)
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
    ax.set_title(f"{e.name}: out-of-fold PR curves (o alert, s report)", fontsize=9)
    ax.legend(fontsize=7)
    _save(plt, fig, path)


def _ig_maps(plt, e: Evaluation, path: Path) -> None:
    assert e.explained is not None and e.explained.attr is not None
    attr, y, pred = e.explained.attr, e.explained.y, e.explained.pred
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
    w, y, pred = e.explained.attention, e.explained.y, e.explained.pred
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
    axes[1].set_title(f"attention per time step, {len(w)} windows (every {step} steps)", fontsize=8)
    _save(plt, fig, path)


# --- writing -------------------------------------------------------------------------------------
def write(e: Evaluation, out: Path) -> None:
    names = np.asarray(e.classes)
    cm = pd.DataFrame({"actual": names[e.y], "predicted": names[e.proba.argmax(1)]})
    with atomic_path(out / "confusion_cv.csv") as tmp:
        cm.to_csv(tmp, index=False)
    with atomic_path(out / "wrong.csv") as tmp:
        e.wrong.to_csv(tmp, index=False)
    write_json(out / "metrics.json", _round(e.metrics))


def run(params: Params, name: str, windows_dir: Path, models_dir: Path, reports_dir: Path) -> dict:
    """Evaluate one cross-validated model from its out-of-fold predictions; explain its final model."""
    predictor = Predictor.load(models_dir / name)
    oof = read_oof(models_dir / name / "oof.parquet")
    folds = read_json(models_dir / name / "folds.json")
    windows = sample_windows(windows_dir)  # the values of a few windows only are read (explanations)
    log.info("evaluate %s on %d out-of-fold windows (%d folds)", name, len(oof[0]), len(folds["folds"]))
    e = evaluate(predictor, oof, folds, windows, params)
    out = reports_dir / name
    draw(e, out / "figures")
    write(e, out)
    iv = e.metrics["cv"]["interval"]["macro_f1"]
    return {"model": name, "cv_f1": round(e.metrics["cv"]["macro_f1"], 4), "interval": [iv["lo"], iv["hi"]]}


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
    """Cross-validated metrics, operating points and explanations for one trained model."""

    def work() -> dict:
        p = load_params(params)
        numerics.pin(p.train.threads, torch=registry.get(model).neural)
        return run(p, model, windows_dir, models_dir, reports_dir)

    run_stage(work)
