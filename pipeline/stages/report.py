"""`report` stage: the comparison a reviewer reads in a pull request.

Writes ``reports/summary.md`` (renders on a code host, offline: tables and small PNGs next
to it), ``reports/summary.html`` (one self-contained page, images inlined, rendered with the
``markdown`` library) and ``reports/comparison.png``. The summary is built as named
sections from the data (:func:`sections`); the pull-request comment (pipeline/review.py) picks
some of those sections and adds ``dvc metrics diff`` / ``dvc params diff`` against a base revision.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts.quarantine import read_quarantine
from pipeline.contracts.recommendation import write_recommendation
from pipeline.contracts.windows import read_index, read_meta
from pipeline.core.config import Params, load_params
from pipeline.core.errors import DataError
from pipeline.core.files import atomic_path, read_json
from pipeline.core.runtime import ParamsOpt, QuarantinePath, ReportsDir, WindowsDir, run_stage
from pipeline.modeling import registry

SECTIONS = (
    "title",
    "data",
    "recommendation",
    "comparison",
    "paired",
    "per_fold",
    "tuning",
    "per_class",
    "operating_points",
    "best_model",
)
TIED = "statistically tied with the best (paired interval of the difference includes 0)"


def load_metrics(reports_dir: Path, models: tuple[str, ...]) -> dict[str, dict]:
    """``reports/models/<m>/metrics.json`` of every model in ``models`` (missing ones: an error naming them)."""
    missing = [m for m in models if not (reports_dir / "models" / m / "metrics.json").exists()]
    if missing:
        raise DataError(f"no metrics for {missing} in {reports_dir / 'models'}: run `dvc repro` (evaluate) first")
    return {m: read_json(reports_dir / "models" / m / "metrics.json") for m in models}


def data_summary(validation: dict, meta: dict, quarantine: dict) -> list[str]:
    """Markdown lines: videos, subjects, frames, detection rate, windows per split and class."""
    f = validation.get("facts", {})
    crit = [r for r in validation.get("results", []) if not r["success"] and r["severity"] == "critical"]
    warn = [r for r in validation.get("results", []) if not r["success"] and r["severity"] != "critical"]
    status = "FAILED" if crit else ("passed with warnings" if warn else "passed")
    lines = ["## Data", ""]
    pool = int(meta.get("pool", 1))
    steps = f" ({meta['window']} steps of {pool} frames averaged)" if pool > 1 else ""
    lines.append(
        f"- task: {meta.get('task', 'distraction')}, classes {', '.join(meta['classes'])}; windows of "
        f"{int(meta['window']) * pool} frames{steps}, every {meta.get('stride', '?')} frames"
    )
    lines += [f"- {k}: {f[k]}" for k in ("videos", "subjects", "frames", "face detected") if k in f]
    q = quarantine.get("quarantined", [])
    lines.append(f"- quarantined inputs: {len(q)}")
    lines += [f"    - `{v['video']}` ({v['stage']}: {v['reason']})" for v in q]
    w = quarantine.get("warnings", [])
    if w:
        lines.append(f"- input warnings: {len(w)}")
        lines += [f"    - `{v['video']}` ({v['stage']}: {v['warning']})" for v in w]
    n = len(validation.get("results", []))
    lines.append(
        f"- validation: {status} ({n} expectations, {len(warn)} warnings; see `reports/validation/summary.md`)"
    )
    lines += [
        "",
        f"Subject-grouped {meta.get('folds')}-fold cross-validation: every subject is scored exactly once, by "
        "models that never saw that subject (in training or early stopping). All scores below are from these "
        "pooled out-of-fold predictions; intervals come from resampling subjects.",
    ]
    per = meta.get("counts", {}).get("per_fold", {})
    if per:
        classes = meta["classes"]
        lines += [
            "",
            "| fold | subjects | " + " | ".join(classes) + " | total |",
            "|---|---|" + "---|" * (len(classes) + 1),
        ]
        for f, counts in per.items():
            subj = ", ".join(meta.get("subjects", {}).get(f, []))
            lines.append(
                f"| {f} | {subj} | " + " | ".join(str(counts[c]) for c in classes) + f" | {sum(counts.values())} |"
            )
    lines += [
        "",
        f"Windows: {meta.get('window')} frames, stride {meta.get('stride')}, features: "
        + ", ".join(f"`{x}`" for x in meta.get("features", [])),
    ]
    return lines


def f1(m: dict) -> float:
    """The headline: cross-validated (pooled out-of-fold) macro-F1."""
    return m["cv"]["macro_f1"]


def mode_score(m: dict, mode: str, key: str) -> float:
    """Mean ``key`` (recall for ``alert``, precision for ``report``) over classes at an operating
    point (0 where its target was never reached)."""
    ops = m["operating_points"].values()
    return sum((o[mode] or {}).get(key, 0.0) for o in ops) / max(1, len(ops))


BEST = "best cross-validated macro-F1"
STABLE = "most stable (smallest train-test gap over the folds, among the models tied with the best)"
ALERT = "real-time alerts (precision first: best recall at the alert precision)"
REPORT = "post-hoc reports (recall first: best precision at the report recall)"
REC_KEYS = {"best": BEST, "stable": STABLE, "alert": ALERT, "report": REPORT}  # recommendation.json keys


def recommend(metrics: dict[str, dict], tied: list[str] | None = None) -> dict[str, str]:
    """Best CV macro-F1; most stable: smallest |gap| among the models statistically tied with the best
    (``tied``; the best itself when no other model is); the precision-first model for alerts and the
    recall-first one for reports."""
    best = max(metrics, key=lambda k: f1(metrics[k]))
    pool = sorted({best, *(k for k in tied or [] if k in metrics)})
    return {
        BEST: best,
        STABLE: min(pool, key=lambda k: (abs(metrics[k]["gap"]), -f1(metrics[k]))),
        ALERT: max(metrics, key=lambda k: (mode_score(metrics[k], "alert", "recall"), f1(metrics[k]))),
        REPORT: max(metrics, key=lambda k: (mode_score(metrics[k], "report", "precision"), f1(metrics[k]))),
    }


def recommendation_lines(metrics: dict[str, dict], rec: dict[str, str], tied: list[str]) -> list[str]:
    """The recommendation section: one line per pick with its score and gap; who is tied with the best."""

    def pick(v: str) -> str:
        m = metrics[v]
        return f"**`{v}`** (CV macro-F1 {f1(m):.3f}{_ivs(m['cv']['interval']['macro_f1'])}, gap {m['gap']:+.3f})"

    best = rec[BEST]
    others = [t for t in tied if t != best]
    lines = ["## Recommendation", ""]
    for k, v in rec.items():
        if k == STABLE and not others:
            lines.append(f"- {k}: none is tied with `{best}`, so there is no other candidate: {pick(v)}")
        else:
            lines.append(f"- {k}: {pick(v)}")
    if others:
        small = smallest(metrics, [best, *others])
        lines.append(
            f"- {TIED}: {', '.join(f'`{t}`' for t in others)}. "
            f"The data cannot rank these; the smallest of them is **`{small}`** "
            f"({metrics[small]['parameters']:,} parameters, {metrics[small]['latency_ms']:.2f} ms per window)."
        )
    else:
        lines.append(f"- `{best}` leads every other model outside the noise.")
    return lines


def oof_predictions(reports_dir: Path, models: list[str], classes: list[str]) -> tuple[np.ndarray, dict]:
    """True classes and each model's out-of-fold predicted classes (confusion_cv.csv, in the windows'
    row order, the same for every model)."""
    code = {c: k for k, c in enumerate(classes)}
    y, preds = None, {}
    for m in models:
        df = pd.read_csv(reports_dir / "models" / m / "confusion_cv.csv")
        y = df["actual"].map(code).to_numpy()
        preds[m] = df["predicted"].map(code).to_numpy()
    return y, preds


def paired_comparisons(
    metrics: dict[str, dict], y: np.ndarray, preds: dict[str, np.ndarray], subjects: np.ndarray, n_classes: int
) -> dict[str, dict[str, Any]]:
    """Each model's CV macro-F1 minus the best model's and minus the strongest baseline's, paired over
    the same resampled subjects."""
    from pipeline.evaluation.intervals import paired_difference

    best = max(metrics, key=lambda k: f1(metrics[k]))
    baselines = [k for k in metrics if registry.get(k).baseline]
    base = max(baselines, key=lambda k: f1(metrics[k])) if baselines else None
    stats = [k for k in metrics if k.startswith("stats_")]
    refs = {
        "best": best,
        "baseline": base,
        "stats": max(stats, key=lambda k: f1(metrics[k])) if stats else None,
        "minirocket": "minirocket" if "minirocket" in metrics else None,
    }
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        out[m] = dict(refs)
        for key, ref in refs.items():
            out[m][f"vs_{key}"] = paired_difference(y, preds[m], preds[ref], subjects, n_classes) if ref else None
    return out


def tied_with_best(paired: dict[str, dict[str, Any]]) -> list[str]:
    """The best model and every model whose paired difference to it is inside the noise."""
    return [m for m, p in paired.items() if m == p["best"] or not p["vs_best"].excludes_zero()]


def smallest(metrics: dict[str, dict], names: list[str]) -> str:
    """Fewest parameters, then lowest latency: the cheapest of equally good models."""
    return min(names, key=lambda k: (metrics[k]["parameters"], metrics[k]["latency_ms"]))


def _iv(iv: Any) -> str:
    return f"{iv.point:+.3f} [{iv.lo:+.3f}, {iv.hi:+.3f}]"


def _ivs(iv: dict | None, digits: int = 2) -> str:
    return "" if not iv else f" [{iv['lo']:.{digits}f}, {iv['hi']:.{digits}f}]"


def paired_table(metrics: dict[str, dict], paired: dict[str, dict[str, Any]], n_subjects: int) -> list[str]:
    any_p = next(iter(paired.values()))
    best, base = any_p["best"], any_p["baseline"]
    lines = [
        "## Paired comparison",
        "",
        f"Difference in cross-validated macro-F1 against the best model (`{best}`) and the strongest baseline "
        f"(`{base}`), with a 95% interval from resampling subjects (the same subjects for both models). "
        "'tie' = the interval includes 0: the data cannot tell the two apart.",
        "",
        *(
            [
                f"**Only {n_subjects} subjects**: a bootstrap over so few drivers has few distinct "
                "resamples, so these intervals are coarse. Read a tie as 'not shown to differ'.",
                "",
            ]
            if n_subjects < 5
            else []
        ),
        "| model | CV F1 | vs best | | vs strongest baseline | |",
        "|---|---|---|---|---|---|",
    ]
    for m in sorted(paired, key=lambda k: -f1(metrics[k])):
        p = paired[m]
        b = p["vs_best"]
        verdict_b = "-" if m == best else ("tie" if not b.excludes_zero() else "worse")
        vb = p["vs_baseline"]
        lines.append(
            f"| `{m}` | {f1(metrics[m]):.3f} | {'-' if m == best else _iv(b)} | {verdict_b} "
            f"| {'-' if vb is None or m == base else _iv(vb)} | {'-' if m == base else verdict(vb)} |"
        )
    return lines


def verdict(d: Any) -> str:
    """A paired difference as a word: tie (interval includes 0), better or worse."""
    if d is None:
        return "-"
    return "tie" if not d.excludes_zero() else ("better" if d.point > 0 else "worse")


def baseline_lines(metrics: dict[str, dict], paired: dict[str, dict[str, Any]]) -> list[str]:
    """Do the neural models beat the statistics baselines and MiniRocket? Said plainly, from the paired intervals."""
    neural = [m for m in metrics if registry.get(m).neural]
    out = []
    stats = [m for m in metrics if m.startswith("stats_")]
    if neural and stats:
        from collections import Counter

        strongest_stats = max(stats, key=lambda k: f1(metrics[k]))
        counts = Counter(verdict(paired[m]["vs_stats"]) for m in neural)
        out.append(
            f"- neural models against the strongest statistics baseline (`{strongest_stats}`): "
            f"{counts['better']} better, {counts['tie']} tied, {counts['worse']} worse (paired 95% intervals)."
        )
    if neural and "minirocket" in metrics:
        top = max(neural, key=lambda k: f1(metrics[k]))
        v = verdict(paired[top]["vs_minirocket"])
        words = {
            "better": "beats MiniRocket outside the noise",
            "tie": "does **not** beat MiniRocket: the two are statistically tied",
            "worse": "does **not** beat MiniRocket: it is worse outside the noise",
        }
        out.append(f"- the best neural model, `{top}`, {words[v]} ({_iv(paired[top]['vs_minirocket'])}).")
    return out


def comparison_table(metrics: dict[str, dict], classes: list[str]) -> list[str]:
    head = "| model | CV F1 [95% CI] | folds min-max | gap | " + " | ".join(f"{c} P/R" for c in classes)
    head += " | ECE | latency ms | params |"
    lines = [head, "|---" * (7 + len(classes)) + "|"]
    for name, m in sorted(metrics.items(), key=lambda kv: -f1(kv[1])):
        pc = m["cv"]["per_class"]
        cells = [f"{pc[c]['precision']:.2f}/{pc[c]['recall']:.2f}" for c in classes]
        folds = [f["test_f1"] for f in m["cv"]["per_fold"].values()]
        lines.append(
            f"| `{name}` | **{f1(m):.3f}**{_ivs(m['cv']['interval']['macro_f1'])} | {min(folds):.2f}-{max(folds):.2f} "
            f"| {m['gap']:+.3f} | " + " | ".join(cells) + f" | {m['ece']:.3f} | {m['latency_ms']:.2f} | "
            f"{m['parameters']:,} |"
        )
    return lines


def per_fold_table(metrics: dict[str, dict]) -> list[str]:
    folds = list(next(iter(metrics.values()))["cv"]["per_fold"])
    lines = [
        "## Per-fold scores",
        "",
        "Macro-F1 of each fold's model on its own (unseen) subjects; the spread is how much one model's score "
        "moves with the drivers it is tested on. Pooled: the macro-F1 of all folds' predictions together (what "
        "the comparison ranks by). A pooled score above every fold's is marked **above every fold**: pooling "
        "mixed fold models that predict differently (a majority baseline predicts another class in each fold), "
        "so no single model scores it; read the fold mean for such a model.",
        "",
        "| model | " + " | ".join(f"fold {f}" for f in folds) + " | mean | sd | pooled |",
        "|---" * (4 + len(folds)) + "|",
    ]
    for name, m in sorted(metrics.items(), key=lambda kv: -f1(kv[1])):
        v = np.array([m["cv"]["per_fold"][f]["test_f1"] for f in folds])
        pooled = f"{f1(m):.3f}" + (" **above every fold**" if pooled_above_folds(m) else "")
        cells = " | ".join(f"{x:.3f}" for x in v)
        lines.append(f"| `{name}` | {cells} | {v.mean():.3f} | {v.std():.3f} | {pooled} |")
    return lines


def tuning_lines(metrics: dict[str, dict]) -> list[str]:
    """What was tuned inside the folds (nested CV) and what it cost; nothing when no model had a grid."""
    tuned = {n: m["tuning"] for n, m in metrics.items() if "tuning" in m}
    if not tuned:
        return []
    lines = [
        "## Hyper-parameters tuned inside the folds",
        "",
        "Each fold chose among the candidates on inner folds of its own training side (its scored and "
        "validation subjects never took part), so the scores above were not selected on the subjects they "
        "score. Extra fits: the inner fits, beyond the folds' and the final model's.",
        "",
        "| model | grid | candidates x inner folds | chosen per fold | final model | extra fits |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in tuned.items():

        def fmt(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items())

        grid = "; ".join(f"{k} {v}" for k, v in t["grid"].items())
        per_fold = " / ".join(fmt(d) for d in t["per_fold"])
        cells = f"{t['candidates']} x {t['inner_folds']} | {per_fold} | {fmt(t['final'])} | {t['fits']}"
        lines.append(f"| `{name}` | {grid} | {cells} |")
    return lines


def pooled_above_folds(m: dict) -> bool:
    """The pooled out-of-fold macro-F1 exceeds every fold model's own (by more than rounding)."""
    folds = [r["test_f1"] for r in m["cv"]["per_fold"].values()]
    return bool(folds) and f1(m) > max(folds) + 5e-4


def per_class_table(metrics: dict[str, dict], classes: list[str]) -> list[str]:
    lines = [
        "## Per-class precision and recall (95% intervals)",
        "",
        "| model | " + " | ".join(f"{c} precision | {c} recall" for c in classes) + " |",
        "|---" * (1 + 2 * len(classes)) + "|",
    ]
    for name, m in sorted(metrics.items(), key=lambda kv: -f1(kv[1])):
        pc = m["cv"]["interval"]["per_class"]
        cells = [f"{pc[c][k]['point']:.2f}{_ivs(pc[c][k])}" for c in classes for k in ("precision", "recall")]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines


def comparison_png(metrics: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(metrics, key=lambda k: f1(metrics[k]))
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(names) + 1.2))
    y = np.arange(len(names))
    point = np.array([f1(metrics[n]) for n in names])
    ivs = [metrics[n]["cv"]["interval"]["macro_f1"] for n in names]
    lo, hi = np.array([iv["lo"] for iv in ivs]), np.array([iv["hi"] for iv in ivs])
    base = [registry.get(n).baseline for n in names]
    err = [np.clip(point - lo, 0, None), np.clip(hi - point, 0, None)]  # a percentile interval may miss the point
    for i, n in enumerate(names):
        folds = [f["test_f1"] for f in metrics[n]["cv"]["per_fold"].values()]
        ax.scatter(folds, [i] * len(folds), marker="|", c="C0", s=30, label="per fold" if i == 0 else None)
    ax.errorbar(point, y, xerr=err, fmt="none", ecolor="C3", elinewidth=1.2, capsize=2)
    ax.scatter(point, y, c=["C7" if b else "C3" for b in base], zorder=3, s=22, label="pooled (95% subject bootstrap)")
    best = int(np.argmax(point))
    ax.axvspan(lo[best], hi[best], color="C3", alpha=0.08, lw=0)  # models reaching into this band may tie
    ax.set_yticks(y, [f"{n} (baseline)" if b else n for n, b in zip(names, base, strict=True)], fontsize=8)
    ax.set_xlabel("macro-F1")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left")  # the strong models sit on the right
    ax.set_title("Cross-validated macro-F1 with 95% intervals (resampling subjects)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _cell(p: dict | None) -> str:
    if not p:
        return "-"
    iv = p.get("interval", {})
    return (
        f"{p['threshold']:.2f}: P {p['precision']:.2f}{_ivs(iv.get('precision'))}, "
        f"R {p['recall']:.2f}{_ivs(iv.get('recall'))}"
    )


def decide(params: Params, reports_dir: Path, windows_dir: Path) -> tuple[dict, dict, list[str], dict[str, str]]:
    """Every model's metrics, the paired comparisons, the models tied with the best, the recommendation."""
    metrics = load_metrics(reports_dir, params.train.models)
    classes = read_meta(windows_dir)["classes"]
    index = read_index(windows_dir)
    y, preds = oof_predictions(reports_dir, list(metrics), classes)
    if len(y) != len(index):
        raise DataError(f"the models' predictions do not match {windows_dir}: rerun `dvc repro` (evaluate)")
    paired = paired_comparisons(metrics, y, preds, index["subject"].astype(str).to_numpy(), len(classes))
    tied = tied_with_best(paired)
    return metrics, paired, tied, recommend(metrics, tied)


def sections(
    params: Params, reports_dir: Path, windows_dir: Path, quarantine_path: Path, decided: tuple | None = None
) -> dict[str, list[str]]:
    """The summary as named sections of Markdown lines, built from the stage outputs (``decided``:
    :func:`decide`'s result, when the caller has it)."""
    metrics, paired, tied, rec = decided or decide(params, reports_dir, windows_dir)
    meta = read_meta(windows_dir)
    validation = read_json(reports_dir / "validation" / "results.json")
    classes = meta["classes"]
    ev = params.evaluate
    out: dict[str, list[str]] = {"title": ["# Driver-behaviour models: evaluation summary"]}
    out["data"] = data_summary(validation, meta, read_quarantine(quarantine_path))
    index = read_index(windows_dir)
    out["recommendation"] = recommendation_lines(metrics, rec, tied)
    out["recommendation"] += baseline_lines(metrics, paired)
    out["paired"] = paired_table(metrics, paired, index["subject"].nunique())
    out["comparison"] = [
        "## Model comparison (pooled out-of-fold predictions; P/R = precision/recall)",
        "",
        "Gap: mean over folds of the fold model's macro-F1 on its training windows minus that on its unseen "
        "subjects. Latency: the final model (trained on all subjects), one window, one CPU thread.",
        "",
        *comparison_table(metrics, classes),
        "",
        "![comparison](comparison.png)",
    ]
    out["per_fold"] = per_fold_table(metrics)
    out["tuning"] = tuning_lines(metrics)
    out["per_class"] = per_class_table(metrics, classes)
    head = "| model | " + " | ".join(f"{c} alert | {c} report" for c in classes) + " |"
    out["operating_points"] = [
        "## Operating points",
        "",
        f"Alert: best recall with precision >= {ev.alert_precision}; report: best precision with recall >= "
        f"{ev.report_recall}, chosen on the pooled out-of-fold predictions. Each cell: threshold: precision "
        "and recall with 95% subject-bootstrap intervals at that threshold; '-' where the target is never reached.",
        "",
        head,
        "|---" * (1 + 2 * len(classes)) + "|",
    ]
    for name, m in metrics.items():
        ops = m["operating_points"]
        cells = " | ".join(f"{_cell(ops[c]['alert'])} | {_cell(ops[c]['report'])}" for c in classes)
        out["operating_points"].append(f"| `{name}` | {cells} |")
    best = rec[BEST]
    lines = [f"## The best model, `{best}`", ""]
    for fig in ("confusion", "pr_curves", "ig_importance", "ig_maps", "attention"):
        if (reports_dir / "models" / best / "figures" / f"{fig}.png").exists():
            lines.append(f"![{fig}](models/{best}/figures/{fig}.png)")
    wrong = reports_dir / "models" / best / "wrong.csv"
    if wrong.exists():
        w = pd.read_csv(wrong)
        lines += [
            "",
            "Most confidently wrong windows of the pooled out-of-fold predictions (open the clip at these times):",
            "",
            "| video | subject | from s | to s | true | predicted | confidence |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{r.video}` | {r.subject} | {r.start_t:.1f} | {r.end_t:.1f} | {r.true} | {r.predicted} | "
            f"{r.confidence:.2f} |"
            for r in w.itertuples()
        ]
    lines += [
        "",
        "Per model: `reports/models/<model>/` (metrics.json, figures/, wrong.csv; training/: per-epoch curves).",
    ]
    out["best_model"] = lines
    return out


def join(parts: dict[str, list[str]], keys: tuple[str, ...]) -> str:
    return "\n\n".join("\n".join(parts[k]) for k in keys if parts.get(k)) + "\n"  # empty sections left out


def summary_markdown(params: Params, reports_dir: Path, windows_dir: Path, quarantine_path: Path) -> str:
    return join(sections(params, reports_dir, windows_dir, quarantine_path), SECTIONS)


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
    "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}"
)


def to_html(markdown_text: str, base: Path) -> str:
    """One self-contained page (Python-Markdown with tables; PNGs beside the summary inlined)."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")

    def inline(m: re.Match) -> str:
        img = base / html.unescape(m.group(2))
        if not img.is_file():
            return m.group(0)
        return f'{m.group(1)}"data:image/png;base64,{base64.b64encode(img.read_bytes()).decode()}"'

    body = re.sub(r'(<img [^>]*src=)"([^"]+\.png)"', inline, body)
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>Evaluation summary</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def run(params: Params, reports_dir: Path, windows_dir: Path, quarantine_path: Path) -> dict:
    """summary.md, summary.html, comparison.png."""
    metrics = load_metrics(reports_dir, params.train.models)
    with atomic_path(reports_dir / "comparison.png", keep_suffix=True) as tmp:
        comparison_png(metrics, tmp)
    md = summary_markdown(params, reports_dir, windows_dir, quarantine_path)
    with atomic_path(reports_dir / "summary.md") as tmp:
        tmp.write_text(md)
    with atomic_path(reports_dir / "summary.html") as tmp:
        tmp.write_text(to_html(md, reports_dir))
    _, _, tied, rec = decide(params, reports_dir, windows_dir)
    write_recommendation(reports_dir, {k: rec[label] for k, label in REC_KEYS.items()}, tied)
    return {"models": len(metrics), **rec}


def main(
    params: ParamsOpt = Path("params.yaml"),
    reports_dir: ReportsDir = Path("reports"),
    windows_dir: WindowsDir = Path("data/windows"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """The comparison of all models: reports/summary.md + summary.html."""
    run_stage(lambda: run(load_params(params), reports_dir, windows_dir, quarantine))
