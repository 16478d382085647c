"""`report` stage: the comparison a reviewer reads in a pull request.

Writes ``reports/summary.md`` (renders on a code host, offline: tables and small PNGs
next to it), ``reports/summary.html`` (one self-contained page, images inlined), and
``reports/comparison.png``. :func:`pr_comment` builds a pull-request comment from the
summary plus ``dvc metrics diff`` and ``dvc params diff`` against a base revision.
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
from pathlib import Path

from pipeline.config import Params


def load_metrics(reports_dir: Path, models: tuple[str, ...]) -> dict[str, dict]:
    """``reports/models/<m>/metrics.json`` of every model in ``models`` (missing ones: an error naming them)."""
    missing = [m for m in models if not (reports_dir / "models" / m / "metrics.json").exists()]
    if missing:
        raise FileNotFoundError(f"no metrics for {missing}: run `dvc repro evaluate` first")
    return {m: json.loads((reports_dir / "models" / m / "metrics.json").read_text()) for m in models}


def data_summary(validation: dict, meta: dict, quarantine: dict) -> list[str]:
    """Markdown lines: videos, subjects, frames, detection rate, windows per split and class."""
    f = validation.get("facts", {})
    crit = [r for r in validation.get("results", []) if not r["success"] and r["severity"] == "critical"]
    warn = [r for r in validation.get("results", []) if not r["success"] and r["severity"] != "critical"]
    status = "FAILED" if crit else ("passed with warnings" if warn else "passed")
    lines = ["## Data", ""]
    lines += [f"- {k}: {f[k]}" for k in ("videos", "subjects", "frames", "face detected") if k in f]
    q = quarantine.get("quarantined", [])
    lines.append(f"- quarantined inputs: {len(q)}" + "".join(f"\n  - `{v['video']}` ({v['stage']}: {v['reason']})"
                                                            for v in q))  # fmt: skip
    lines.append(f"- validation: {status} ({len(validation.get('results', []))} expectations, "
                 f"{len(warn)} warnings; see `reports/validation/summary.md`)")  # fmt: skip
    per = meta.get("counts", {}).get("per_split", {})
    if per:
        classes = meta["classes"]
        lines += ["", "| split | subjects | " + " | ".join(classes) + " | total |",
                  "|---|---|" + "---|" * (len(classes) + 1)]  # fmt: skip
        for sp, counts in per.items():
            subj = len(meta.get("subjects", {}).get(sp, []))
            lines.append(f"| {sp} | {subj} | " + " | ".join(str(counts[c]) for c in classes)
                         + f" | {sum(counts.values())} |")  # fmt: skip
    lines += ["", f"Windows: {meta.get('window')} frames, stride {meta.get('stride')}, features: "
              + ", ".join(f"`{x}`" for x in meta.get("features", []))]  # fmt: skip
    return lines


def alert_score(m: dict) -> float:
    """Mean recall at the real-time alerting operating point (0 where precision was never reached)."""
    ops = m["operating_points"].values()
    return sum((o["alert"] or {}).get("recall", 0.0) for o in ops) / max(1, len(ops))


def recommend(metrics: dict[str, dict]) -> dict[str, str]:
    """Best test macro-F1; most stable (smallest |gap| among those beating the majority baseline); best alerter."""
    floor = metrics.get("majority", {}).get("test", {}).get("macro_f1", 0.0)
    strong = {k: m for k, m in metrics.items() if m["test"]["macro_f1"] > floor} or metrics
    return {
        "best test macro-F1": max(metrics, key=lambda k: metrics[k]["test"]["macro_f1"]),
        "most stable (smallest train-val gap)": min(strong, key=lambda k: (abs(strong[k]["gap"]),
                                                                         -strong[k]["test"]["macro_f1"])),
        "real-time alerts (best recall at the alert precision)": max(metrics, key=lambda k: alert_score(metrics[k])),
    }  # fmt: skip


def comparison_table(metrics: dict[str, dict], classes: list[str]) -> list[str]:
    head = "| model | train F1 | val F1 | test F1 | gap | " + " | ".join(f"{c} P/R" for c in classes)
    head += " | ECE | latency ms | params |"
    lines = [head, "|---" * (8 + len(classes)) + "|"]
    for name, m in sorted(metrics.items(), key=lambda kv: -kv[1]["test"]["macro_f1"]):
        pc = m["test"]["per_class"]
        cells = [f"{pc[c]['precision']:.2f}/{pc[c]['recall']:.2f}" for c in classes]
        lines.append(
            f"| `{name}` | {m['train']['macro_f1']:.3f} | {m['val']['macro_f1']:.3f} | **{m['test']['macro_f1']:.3f}** "
            f"| {m['gap']:+.3f} | " + " | ".join(cells) + f" | {m['ece']:.3f} | {m['latency_ms']:.2f} | "
            f"{m['parameters']:,} |"
        )
    return lines


def comparison_png(metrics: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(metrics, key=lambda k: metrics[k]["test"]["macro_f1"])
    fig, ax = plt.subplots(figsize=(6.5, 0.32 * len(names) + 1.2))
    y = range(len(names))
    for off, sp, color in ((-0.25, "train", "C7"), (0.0, "val", "C0"), (0.25, "test", "C3")):
        ax.barh([i + off for i in y], [metrics[n][sp]["macro_f1"] for n in names], height=0.25, color=color,
                label=sp)  # fmt: skip
    ax.set_yticks(list(y), names, fontsize=8)
    ax.set_xlabel("macro-F1")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Model comparison", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def summary_markdown(params: Params, reports_dir: Path, windows_dir: Path, quarantine_path: Path) -> str:
    from pipeline.io import read_json

    metrics = load_metrics(reports_dir, params.train.models)
    meta = read_json(windows_dir / "meta.json")
    validation = read_json(reports_dir / "validation" / "results.json")
    quarantine = read_json(quarantine_path) if quarantine_path.exists() else {}
    classes = meta["classes"]
    rec = recommend(metrics)
    ev = params.evaluate
    lines = ["# Driver-behaviour models: evaluation summary", ""]
    lines += data_summary(validation, meta, quarantine)
    lines += ["", "## Recommendation", ""]
    lines += [f"- {k}: **`{v}`** (test macro-F1 {metrics[v]['test']['macro_f1']:.3f}, gap {metrics[v]['gap']:+.3f})"
              for k, v in rec.items()]  # fmt: skip
    lines += ["", "## Model comparison (test split unless noted; P/R = precision/recall)", ""]
    lines += comparison_table(metrics, classes)
    lines += ["", "![comparison](comparison.png)", "", "## Operating points (test split)", "",
              f"Alert: best recall with precision >= {ev.alert_precision}; report: best precision with recall >= "
              f"{ev.report_recall}. Each cell: threshold (precision/recall); '-' where the target is never reached.",
              "", "| model | " + " | ".join(f"{c} alert | {c} report" for c in classes) + " |",
              "|---" * (1 + 2 * len(classes)) + "|"]  # fmt: skip

    def cell(p: dict | None) -> str:
        return "-" if not p else f"{p['threshold']:.2f} ({p['precision']:.2f}/{p['recall']:.2f})"

    for name, m in metrics.items():
        ops = m["operating_points"]
        lines.append(f"| `{name}` | " + " | ".join(f"{cell(ops[c]['alert'])} | {cell(ops[c]['report'])}"
                                                  for c in classes) + " |")  # fmt: skip
    best = rec["best test macro-F1"]
    lines += ["", f"## The best model, `{best}`", ""]
    for fig in ("confusion", "pr_curves", "ig_importance", "ig_maps", "attention"):
        if (reports_dir / "models" / best / "figures" / f"{fig}.png").exists():
            lines.append(f"![{fig}](models/{best}/figures/{fig}.png)")
    wrong = reports_dir / "models" / best / "wrong.csv"
    if wrong.exists():
        import pandas as pd

        w = pd.read_csv(wrong)
        lines += [
            "",
            "Most confidently wrong test windows (open the clip at these times):",
            "",
            "| video | subject | from s | to s | true | predicted | confidence |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [f"| `{r.video}` | {r.subject} | {r.start_t:.1f} | {r.end_t:.1f} | {r.true} | {r.predicted} | "
                  f"{r.confidence:.2f} |" for r in w.itertuples()]  # fmt: skip
    lines += ["", "Per model: `reports/models/<model>/` (metrics.json, figures/, wrong.csv, train_log.csv).", ""]
    return "\n".join(lines)


def to_html(markdown: str, base: Path) -> str:
    """A small, dependency-free Markdown -> HTML rendering with images inlined (works offline)."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(-+\|)+", r.replace("---", "-"))]
            cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
            out = "<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in cells[0]) + "</tr>"
            out += "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(out + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if m := re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line):
            img = base / m.group(2)
            if img.exists():
                data = base64.b64encode(img.read_bytes()).decode()
                body.append(f'<img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.lstrip().startswith("- "):
            body.append(f"<li>{_inline(line.lstrip()[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")  # fmt: skip
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation summary</title><style>{style}" \
           f"</style></head><body>{''.join(body)}</body></html>\n"  # fmt: skip


def _inline(text: str) -> str:
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def run(params: Params, reports_dir: Path, windows_dir: Path, quarantine_path: Path) -> dict:
    """Stage entry: summary.md, summary.html, comparison.png."""
    from pipeline.io import atomic_path

    metrics = load_metrics(reports_dir, params.train.models)
    with atomic_path(reports_dir / "comparison.png", keep_suffix=True) as tmp:
        comparison_png(metrics, tmp)
    md = summary_markdown(params, reports_dir, windows_dir, quarantine_path)
    with atomic_path(reports_dir / "summary.md") as tmp:
        tmp.write_text(md)
    with atomic_path(reports_dir / "summary.html") as tmp:
        tmp.write_text(to_html(md, reports_dir))
    return {"models": len(metrics), **recommend(metrics)}


# --- pull-request comment ------------------------------------------------------------------------
def build_comment(summary_md: str, metrics_diff: str, params_diff: str, base: str) -> str:
    """The PR comment: recommendation and comparison first, then what changed against ``base``."""
    keep = summary_md.split("## The best model")[0].strip()
    return "\n".join([
        keep, "", f"## Metrics changed against `{base}`", "",
        metrics_diff.strip() or "_No metric changed._", "",
        f"## Params changed against `{base}`", "", params_diff.strip() or "_No parameter changed._", "",
        "<sub>Generated by `python -m pipeline.cli pr-comment`.</sub>", "",
    ])  # fmt: skip


def pr_comment(base: str, reports_dir: Path) -> str:
    """Run ``dvc metrics diff`` / ``dvc params diff`` against ``base`` (argument lists, no shell)."""

    def dvc(*args: str) -> str:
        res = subprocess.run(["dvc", *args], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            return f"_`dvc {' '.join(args)}` failed: {res.stderr.strip().splitlines()[-1] if res.stderr else ''}_"
        return res.stdout

    summary = (reports_dir / "summary.md").read_text()
    return build_comment(summary, dvc("metrics", "diff", "--md", base), dvc("params", "diff", "--md", base), base)
