"""What a person reads after ``predict``: a timeline figure per video and a run summary
(Markdown + HTML), drawn from the data the run wrote (summary.json, the tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.files import atomic_path

NO_DECISION = "(no decision)"
UNFAMILIAR = "unfamiliar"  # pipeline/apply/predict.py: a window unlike the model's training windows


def colours(classes: list[str]) -> dict[str, str]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    out = {c: matplotlib.colors.to_hex(cmap(i % 10)) for i, c in enumerate(classes)}
    out[NO_DECISION] = "#dddddd"
    out[UNFAMILIAR] = "#555555"
    out[""] = "#dddddd"
    return out


def timeline_figure(
    tl: pd.DataFrame,
    seg: pd.DataFrame,
    alerts: pd.DataFrame,
    classes: list[str],
    thresholds: dict[str, float],
    title: str,
    out: Path,
) -> None:
    """Probabilities over time (dotted: each class's threshold), the segments, the alerts and,
    when labels were given, the ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col = colours(classes)
    truth = "truth" in tl.columns
    rows = 3 + truth
    fig, axes = plt.subplots(
        rows, 1, figsize=(10, 2.2 + 0.5 * rows), sharex=True, gridspec_kw={"height_ratios": [4] + [0.6] * (rows - 1)}
    )
    ax = axes[0]
    for c in classes:
        ax.plot(tl["centre_s"], tl[f"p_{c}"], color=col[c], lw=1.4, label=c)
        if c in thresholds and thresholds[c] < 1:
            ax.axhline(thresholds[c], color=col[c], lw=0.8, ls=":")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", ncol=len(classes), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.text(
        1.0,
        1.02,
        "at each window's centre, as the segments; dotted: thresholds; alerts start when decided, at the window's end",
        transform=ax.transAxes,
        ha="right",
        fontsize=7,
    )

    def bar(a, spans, name: str) -> None:
        for label, s, e in spans:
            a.axvspan(s, e, color=col.get(label, "#999999"), lw=0)
        a.set_yticks([])
        a.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)

    bar(axes[1], seg[["label", "start_s", "end_s"]].itertuples(index=False), "predicted")
    bar(axes[2], alerts[["class", "alert_s", "clear_s"]].itertuples(index=False), "alerts")
    if truth:
        step = float(tl["centre_s"].diff().median()) if len(tl) > 1 else 1.0
        spans = [(lab or "", c - step / 2, c + step / 2) for lab, c in zip(tl["truth"], tl["centre_s"], strict=True)]
        bar(axes[3], spans, "labels")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def summary_markdown(s: dict[str, Any], classes: list[str]) -> str:
    lines = [
        "# Driver behaviour: prediction summary",
        "",
        f"Model `{s['model']}` ({s['model_source']}), **{s['mode']}** mode "
        f"({'precision first: real-time alerts' if s['mode'] == 'alert' else 'recall first: post-hoc reports'}); "
        f"driver baseline: {s['baseline']}"
        + (f" (first {s['calibration_s']:g} s with a face)" if s.get("calibration_s") else "")
        + ".",
        "",
        "Thresholds (an alert starts when a class's probability reaches it): "
        + ", ".join(f"`{c}` {v:.2f}" for c, v in s["thresholds"].items() if c not in s["never_alert"])
        + (f"; never alerting: {', '.join(f'`{c}`' for c in s['never_alert'])}" if s["never_alert"] else "")
        + ".",
        "",
        "## Videos",
        "",
        "| video | subject | seconds | decided windows | "
        + " | ".join(f"{c} s" for c in classes)
        + " | unfamiliar | alerts | figure |",
        "|---|---|---|---|" + "---|" * len(classes) + "---|---|---|",
    ]
    for vid, v in s["videos"].items():
        secs = " | ".join(f"{v['seconds_by_class'][c]:g}" for c in classes)
        lines.append(
            f"| {v['video']} | {v['subject']} | {v['seconds']:g} | {v['decided']} of {v['windows']} | {secs} | "
            f"{v.get('unfamiliar_share', 0.0):.0%} | {v['alerts']} | [timeline]({vid}/timeline.png) |"
        )
    lines += [
        "",
        "Seconds per class count decided windows (one stride each); a window without a decision had too "
        "little face visible or came while the driver was still calibrating.",
    ]
    lines += ["", unfamiliar_line(s.get("unfamiliar", {}))]
    if s.get("driver_warnings"):
        lines += ["", "## Driver baselines", ""] + [f"- {w}" for w in s["driver_warnings"]]
    warned = [(v["video"], w) for v in s["videos"].values() for w in v.get("warnings", [])]
    if warned:
        lines += ["", "## Input warnings (videos used)", ""] + [f"- {name}: {w}" for name, w in warned]
    if s["quarantined"] or s["ignored_files"]:
        lines += ["", "## Not scored", ""]
        lines += [f"- {q['video']}: {q['reason']}" for q in s["quarantined"]]
        lines += [f"- {f}: not a video file" for f in s["ignored_files"]]
    for vid in s["videos"]:
        lines += ["", f"### {s['videos'][vid]['video']}", "", f"![timeline]({vid}/timeline.png)"]
    return "\n".join(lines) + "\n"


def unfamiliar_line(u: dict[str, Any]) -> str:
    if not u.get("checked"):
        return (
            "**Unfamiliar input was not checked** (the model predates the score, or it was switched off): every "
            "window got a class, also video unlike anything the model was trained on."
        )
    return (
        f"**Unfamiliar: {u['share']:.1%} of decided windows** were farther from the model's training windows than "
        f"its cut-off (distance {u['cutoff']:.2f}, set so that {u['training_windows_flagged']:.1%} of training-like "
        "windows of unseen drivers exceed it). They count as `unfamiliar`: no class, no alert. A large share means "
        "this video is unlike the training video (camera, lighting, people or behaviours): retrain on such video "
        "before trusting the model here."
    )


def write_summary(out: Path, s: dict[str, Any], classes: list[str]) -> None:
    import markdown

    md = summary_markdown(s, classes)
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(md)
    body = markdown.markdown(md, extensions=["tables"])
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>prediction summary</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"
        f"{body}</body></html>\n"
    )
    with atomic_path(out / "summary.html") as tmp:
        tmp.write_text(html)
