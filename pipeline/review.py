"""The pull-request comment: what a change did to the models, in one comment a code host accepts.

    driver-pipeline pr-comment --base origin/main --out comment.md [--report-url URL] [--run-url URL]

Layout (the first screen answers "what changed, and is it real?"):

1. a marker line (the workflow finds and updates this one comment instead of adding one per push);
2. the headline: how many models got better or worse outside the noise, which params changed,
   the best model now, links to the full HTML report and the workflow run;
3. a text forest plot of every model's CV macro-F1 with its 95% interval (a code block: renders in
   any Markdown, no image to host);
4. before/now per model, the recommendation;
5. folded: paired comparison, model comparison, operating points, the params diff and the full
   metrics diff, each cut to what fits.

The whole comment stays under :data:`BUDGET` characters (GitHub refuses bodies over 65,536):
folded sections are cut row by row with a pointer to the full report. Nothing links to a
relative path (no code host resolves one in a comment).
"""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

from pipeline.core.config import Params
from pipeline.core.runtime import dvc_command, tool_env
from pipeline.stages import report as R

MARKER = "<!-- driver-pipeline:pr-comment -->"
BUDGET = 60_000  # characters; GitHub's limit is 65,536
FOREST_WIDTH = 50


# --- headline -------------------------------------------------------------------------------------
def _headline(m: dict | None) -> tuple[float, float | None, float | None] | None:
    """(macro-F1, lo, hi) of the cross-validated score (None: no CV score in these metrics)."""
    if m is None or "cv" not in m:
        return None
    t = m["cv"]
    iv = t.get("interval", {}).get("macro_f1")
    return (t["macro_f1"], iv["lo"], iv["hi"]) if iv else (t["macro_f1"], None, None)


BETTER, WORSE, WITHIN, UNCHANGED = (
    "**better, outside the noise**",
    "**worse, outside the noise**",
    "changed within the noise",
    "unchanged",
)


def verdicts(before: dict[str, dict | None], now: dict[str, dict]) -> dict[str, str]:
    """Per model (now, then removed ones): how its CV macro-F1 moved against the base. A change
    counts only when the two 95% intervals do not overlap."""
    out = {}
    for m in now:
        a, b = _headline(before.get(m)), _headline(now[m])
        if a is None and before.get(m) is not None:
            out[m] = "not comparable (no cross-validated score at the base)"
        elif a is None:
            out[m] = "new model"
        elif b is None:
            out[m] = "no cross-validated score now"
        elif a[0] == b[0]:
            out[m] = UNCHANGED
        elif a[1] is None or b[1] is None:
            out[m] = "changed (no interval on one side to judge it)"
        elif b[1] > a[2]:
            out[m] = BETTER
        elif b[2] < a[1]:
            out[m] = WORSE
        else:
            out[m] = WITHIN
    for m in sorted(set(before) - set(now)):
        out[m] = "removed"
    return out


def _fmt(h: tuple[float, float | None, float | None] | None) -> str:
    if h is None:
        return "-"
    return f"{h[0]:.3f}" + ("" if h[1] is None else f" [{h[1]:.2f}, {h[2]:.2f}]")


def headline_changes(before: dict[str, dict | None], now: dict[str, dict], base: str) -> list[str]:
    """Per model, CV macro-F1 at ``base`` and now with their intervals, and the verdict."""
    lines = [
        f"## Before and now (`{base}` -> this branch)",
        "",
        "Cross-validated macro-F1 with its 95% subject-bootstrap interval. A change counts only when the two "
        "intervals do not overlap.",
        "",
        "| model | before | now | verdict |",
        "|---|---|---|---|",
    ]
    for m, word in verdicts(before, now).items():
        lines.append(f"| `{m}` | {_fmt(_headline(before.get(m)))} | {_fmt(_headline(now.get(m)))} | {word} |")
    return lines


def _names(models: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"`{m}`" for m in models[:limit])
    return shown + (f" and {len(models) - limit} more" if len(models) > limit else "")


def summary_line(
    before: dict[str, dict | None], now: dict[str, dict], params_changed: list[str], base: str
) -> list[str]:
    """The first screen: what changed, outside or inside the noise, in words."""
    v = verdicts(before, now)
    by: dict[str, list[str]] = {}
    for m, word in v.items():
        by.setdefault(word, []).append(m)
    parts = []
    if by.get(BETTER):
        parts.append(f"**{len(by[BETTER])} better outside the noise** ({_names(by[BETTER])})")
    if by.get(WORSE):
        parts.append(f"**{len(by[WORSE])} worse outside the noise** ({_names(by[WORSE])})")
    if by.get(WITHIN):
        parts.append(f"{len(by[WITHIN])} changed within the noise")
    if by.get(UNCHANGED):
        parts.append(f"{len(by[UNCHANGED])} unchanged")
    rest = [m for m, w in v.items() if w not in (BETTER, WORSE, WITHIN, UNCHANGED)]
    if rest:
        parts.append(f"{len(rest)} new, removed or not comparable ({_names(rest)})")
    best = max(now, key=lambda k: R.f1(now[k]))
    params = (
        f"{len(params_changed)} param(s) changed: {', '.join(f'`{p}`' for p in params_changed[:8])}"
        + (f" and {len(params_changed) - 8} more" if len(params_changed) > 8 else "")
        if params_changed
        else "no param changed"
    )
    moved = by.get(BETTER, []) + by.get(WORSE, [])
    verdict = (
        "A real change: see the models marked outside the noise." if moved else "No model moved outside the noise."
    )
    return [
        f"**Against `{base}`:** " + "; ".join(parts) + f". {params[0].upper()}{params[1:]}.",
        "",
        f"{verdict} Best now: `{best}`, CV macro-F1 {_fmt(_headline(now[best]))}.",
    ]


# --- text forest plot -----------------------------------------------------------------------------
def forest(metrics: dict[str, dict], paired: dict[str, dict] | None = None, width: int = FOREST_WIDTH) -> list[str]:
    """CV macro-F1 with 95% intervals as text: one row per model, best first; ``o`` the point,
    ``-`` the interval, on a common axis. With ``paired``: each model against the best (paired)."""
    rows = sorted(metrics, key=lambda k: -R.f1(metrics[k]))
    ivs = {m: _headline(metrics[m]) for m in rows}
    lo = min(h[1] if h[1] is not None else h[0] for h in ivs.values())
    hi = max(h[2] if h[2] is not None else h[0] for h in ivs.values())
    lo, hi = max(0.0, int(lo * 10) / 10), min(1.0, -int(-hi * 10) / 10)
    if hi <= lo:
        hi = min(1.0, lo + 0.1)

    def col(x: float) -> int:
        return round((min(max(x, lo), hi) - lo) / (hi - lo) * (width - 1))

    name_w = max(len(m) for m in rows)
    ticks = list(" " * (width + 2))
    for k in range(5):
        t = lo + (hi - lo) * k / 4
        s, c = f"{t:.2f}", 1 + col(t)  # 1: the bar's opening "|"
        start = min(max(0, c - len(s) // 2), len(ticks) - len(s))
        ticks[start : start + len(s)] = s
    lines = ["```text", f"{'model':{name_w}}  {'CV macro-F1 [95%]':19}  {''.join(ticks)}  vs best"]
    for m in rows:
        point, a, b = ivs[m]
        bar = [" "] * width
        if a is not None:
            for c in range(col(a), col(b) + 1):
                bar[c] = "-"
        bar[col(point)] = "o"
        side = ""
        if paired is not None and m in paired:
            p = paired[m]
            side = "best" if m == p["best"] else ("tie" if not p["vs_best"].excludes_zero() else "worse")
        lines.append(f"{m:{name_w}}  {_fmt(ivs[m]):19}  |{''.join(bar)}|  {side}".rstrip())
    lines.append("```")
    return lines


# --- assembly under the budget ---------------------------------------------------------------------
def fold(title: str, lines: list[str], budget: int, more: str) -> str:
    """A ``<details>`` section holding as many of ``lines`` as fit in ``budget`` characters; the rest
    is replaced by one line pointing to ``more``. Empty when not even the frame fits."""
    head = f"<details><summary>{html.escape(title)}</summary>\n\n"
    tail = "\n\n</details>"
    kept, used, cut = [], len(head) + len(tail), 0
    reserve = 120 + len(more)  # the "n more rows" line
    for i, line in enumerate(lines):
        if used + len(line) + 1 + (reserve if i < len(lines) - 1 else 0) > budget:
            cut = len(lines) - i
            break
        kept.append(line)
        used += len(line) + 1
    if cut:
        kept += ["", f"_... {cut} more lines cut to keep this comment under the code host's size limit: {more}._"]
    text = head + "\n".join(kept) + tail
    return text if len(text) <= budget else ""


def build_comment(
    *,
    base: str,
    summary: list[str],
    forest_lines: list[str],
    headline: list[str],
    recommendation: list[str],
    folded: list[tuple[str, list[str]]],
    report_url: str | None = None,
    run_url: str | None = None,
    budget: int = BUDGET,
) -> str:
    """The comment: marker, headline and plot first, then the folded sections while they fit."""
    where = (
        f"[full HTML report]({report_url})"
        if report_url
        else "the full HTML report is `reports/summary.html` in this run's artifacts"
    )
    links = [f"Details: {where}" + (f" · [workflow run]({run_url})" if run_url else "") + "."]
    top = [
        MARKER,
        f"# Model evaluation against `{base}`",
        "",
        *summary,
        "",
        *links,
        "",
        "## CV macro-F1 of every model (95% subject-bootstrap intervals)",
        "",
        *forest_lines,
        "",
        *headline,
        "",
        *recommendation,
    ]
    footer = "\n\n<sub>Generated by `driver-pipeline pr-comment`; updated on every push.</sub>\n"
    text = "\n".join(top)
    if len(text) + len(footer) > budget:  # 1000s of models: keep the first screen, cut the tables
        text = text[: budget - len(footer) - 200].rsplit("\n", 1)[0] + f"\n\n_... cut to fit: {where}._"
    more = where
    for title, lines in folded:
        room = budget - len(text) - len(footer) - 2
        section = fold(title, lines, room, more)
        if section:
            text += "\n\n" + section
    return text + footer


def changed_params(params_diff_json: str) -> list[str]:
    """Param names from ``dvc params diff --json`` ({file: {param: {old, new}}})."""
    try:
        data = json.loads(params_diff_json or "{}")
    except json.JSONDecodeError:
        return []
    return sorted(p for per_file in data.values() for p in per_file)


def pr_comment(
    base: str,
    params: Params,
    reports_dir: Path,
    windows_dir: Path,
    quarantine_path: Path,
    report_url: str | None = None,
    run_url: str | None = None,
) -> str:
    """Build the comment against ``base`` (``dvc metrics/params diff``, ``git show``; no shell)."""

    def dvc(*args: str) -> str:
        res = subprocess.run(dvc_command(*args), capture_output=True, text=True, check=False, env=tool_env())
        if res.returncode != 0:
            return f"_`dvc {' '.join(args)}` failed: {res.stderr.strip().splitlines()[-1] if res.stderr else ''}_"
        return res.stdout

    def at_base(model: str) -> dict | None:
        path = f"{reports_dir.as_posix()}/models/{model}/metrics.json"
        res = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True, text=True, check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    decided = R.decide(params, reports_dir, windows_dir)
    metrics, paired = decided[0], decided[1]
    parts = R.sections(params, reports_dir, windows_dir, quarantine_path, decided)
    classes = R.read_meta(windows_dir)["classes"]
    before = {m: at_base(m) for m in metrics}
    changed = changed_params(dvc("params", "diff", "--json", base))
    metrics_diff = dvc("metrics", "diff", "--md", base).strip() or "_No metric changed._"
    params_diff = dvc("params", "diff", "--md", base).strip() or "_No parameter changed._"
    rows = max(0, sum(1 for line in metrics_diff.splitlines() if line.startswith("|")) - 2)
    return build_comment(
        base=base,
        summary=summary_line(before, metrics, changed, base),
        forest_lines=forest(metrics, paired),
        headline=headline_changes(before, metrics, base),
        recommendation=parts["recommendation"],
        folded=[
            ("Paired comparison with the best model and the strongest baseline", parts["paired"][2:]),
            ("Model comparison (precision/recall per class, gap, latency, size)", R.comparison_table(metrics, classes)),
            ("Operating points (alerts: precision first; reports: recall first)", parts["operating_points"][2:]),
            (f"Params changed against {base} ({len(changed)})", params_diff.splitlines()),
            (f"Full metrics diff against {base} ({rows} rows)", metrics_diff.splitlines()),
        ],
        report_url=report_url,
        run_url=run_url,
    )
