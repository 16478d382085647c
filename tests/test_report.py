"""The report a reviewer reads, the HTML page, and the pull-request comment builder."""

import itertools
import json
import re

import yaml

from pipeline.stages import report as R
from pipeline.stages import train as T
from tests.conftest import ROOT


def fake_metrics(cv_f1, gap, alert_recall, report_precision=None):
    per = {c: {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10} for c in ("a", "b")}
    op = {
        "alert": {"threshold": 0.8, "precision": 0.95, "recall": alert_recall},
        "report": None
        if report_precision is None
        else {"threshold": 0.2, "precision": report_precision, "recall": 0.9},
        "average_precision": 0.9,
    }
    iv = {"point": cv_f1, "lo": cv_f1 - 0.05, "hi": min(1.0, cv_f1 + 0.05)}
    return {
        "cv": {
            "macro_f1": cv_f1,
            "accuracy": cv_f1,
            "per_class": per,
            "interval": {"macro_f1": iv},
            "per_fold": {str(f): {"test_f1": cv_f1 + 0.01 * f} for f in range(6)},
        },
        "gap": gap,
        "ece": 0.05,
        "latency_ms": 1.5,
        "parameters": 1234,
        "operating_points": {"a": op, "b": op},
    }


def test_recommendation():
    m = {
        "majority": fake_metrics(0.2, 0.0, 0.0),
        "stats_lr": fake_metrics(0.5, 0.0, 0.1),
        "gru": fake_metrics(0.9, 0.08, 0.5, report_precision=0.95),
        "cnn_lstm": fake_metrics(0.85, 0.01, 0.9, report_precision=0.6),
    }
    rec = R.recommend(m)
    assert rec[R.BEST] == "gru"
    # most stable only among the models tied with the best: cnn_lstm has the smaller gap but is not tied
    assert rec[R.STABLE] == "gru"
    lines = "\n".join(R.recommendation_lines(m, rec, ["gru"]))
    assert "none is tied with `gru`" in lines and "`gru` leads every other model outside the noise" in lines
    tied = R.recommend(m, tied=["gru", "cnn_lstm"])
    assert tied[R.STABLE] == "cnn_lstm"  # among those tied with the best
    lines = "\n".join(R.recommendation_lines(m, tied, ["gru", "cnn_lstm"]))
    assert "none is tied" not in lines and "cannot rank these" in lines
    assert rec[R.ALERT] == "cnn_lstm"  # precision first: the most recall at the alert precision
    assert rec[R.REPORT] == "gru"  # recall first: the most precision at the report recall


def test_summary_and_html_from_stage_outputs(tmp_path):
    reports, wdir = tmp_path / "reports", tmp_path / "w"
    from tests.test_train import make_set, params

    make_set(wdir)
    p = params(models=("majority", "stats_lr"))
    for name in ("majority", "stats_lr"):
        T.run(p, name, wdir, tmp_path / "models", reports / "models")
        from pipeline.stages import evaluate as E

        E.run(p, name, wdir, tmp_path / "models", reports / "models")
    (reports / "validation").mkdir(parents=True)
    (reports / "validation" / "results.json").write_text(
        json.dumps(
            {
                "facts": {"videos": 3, "subjects": 12, "frames": 999, "face detected": "99.0% of frames"},
                "results": [{"success": True, "severity": "critical"}],
            }
        )
    )
    q = tmp_path / "quarantine.json"
    q.write_text(json.dumps({"quarantined": [{"video": "v/bad.mp4", "stage": "frames", "reason": "empty file"}]}))
    summary = R.run(p, reports, wdir, q)
    md = (reports / "summary.md").read_text()
    assert summary[R.BEST] == "stats_lr"
    assert "| `stats_lr` |" in md and "| `majority` |" in md and "quarantined inputs: 1" in md
    assert "`v/bad.mp4` (frames: empty file)" in md and "validation: passed" in md
    for title in ("## Paired comparison", "## Per-fold scores", "## Per-class precision and recall (95% intervals)"):
        assert title in md
    assert "Subject-grouped 5-fold cross-validation" in md and "out-of-fold" in md
    row = next(line for line in md.splitlines() if line.startswith("| `stats_lr` | **"))
    assert "** [" in row  # CV macro-F1 with its subject-bootstrap interval
    fold_row = next(line for line in md.splitlines() if line.startswith("| `stats_lr` | ") and "fold" not in line)
    assert fold_row.count("|") >= 7
    assert "![comparison](comparison.png)" in md and (reports / "comparison.png").stat().st_size > 1000
    page = (reports / "summary.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page and "http" not in page
    assert "<table>" in page and "<code>stats_lr</code>" in page and "<strong>" in page  # a real Markdown renderer


RELATIVE_LINK = re.compile(r"\]\((?!https?://)[^)]*\)")  # [text](path) or ![alt](path) not on the web


def comment_for(n_models: int, n_params: int, diff_rows: int, report_url: str | None = None) -> str:
    """A comment where every model changed, many params changed and the metrics diff is long."""
    from pipeline import review as V

    names = [f"model_{i:02d}_with_a_long_name" for i in range(n_models)]
    now = {n: fake_metrics(0.5 + 0.02 * i, 0.05, 0.5) for i, n in enumerate(names)}
    for i, n in enumerate(names):
        now[n]["cv"]["interval"] = {"macro_f1": {"point": 0.5 + 0.02 * i, "lo": 0.45 + 0.02 * i, "hi": 0.55 + 0.02 * i}}
    before = {n: fake_metrics(0.3, 0.05, 0.5) for n in names}
    for n in names:
        before[n]["cv"]["interval"] = {"macro_f1": {"point": 0.3, "lo": 0.25, "hi": 0.35}}
    params = [f"hparams.{n}.hidden" for n in names][:n_params] + [f"train.p{i}" for i in range(n_params - n_models)]
    params_md = ["| Path | Param | HEAD | workspace |", "|---|---|---|---|"]
    params_md += [f"| params.yaml | {p} | 32 | 64 |" for p in params]
    diff = ["| Path | Metric | HEAD | workspace | Change |", "|---|---|---|---|---|"]
    diff += [
        f"| reports/models/{names[i % n_models]}/metrics.json | cv.per_class.c{i}.recall | 0.1 | 0.2 | 0.1 |"
        for i in range(diff_rows)
    ]
    return V.build_comment(
        base="origin/main",
        summary=V.summary_line(before, now, params, "origin/main"),
        forest_lines=V.forest(now),
        headline=V.headline_changes(before, now, "origin/main"),
        recommendation=["## Recommendation", "", "- best: **`x`**"],
        folded=[
            ("Model comparison", R.comparison_table(now, ["a", "b"])),
            ("Params changed", params_md),
            ("Full metrics diff", diff),
        ],
        report_url=report_url,
    )


def test_the_worst_case_comment_fits_the_code_host():
    """20 models, every one changed, 300 params changed, a 20,000-row metrics diff: under 65,536
    characters, the headline in the first screen, no relative links, every fold closed."""
    from pipeline import review as V

    text = comment_for(20, 300, 20_000, report_url="https://github.com/o/r/actions/runs/1/artifacts/2")
    assert len(text) <= V.BUDGET < 65_536
    first_screen = "\n".join(text.splitlines()[:8])
    assert text.startswith(V.MARKER)
    assert "**20 better outside the noise**" in first_screen and "300 param(s) changed" in first_screen
    assert "Best now: `model_19_with_a_long_name`" in first_screen
    assert not RELATIVE_LINK.search(text), RELATIVE_LINK.search(text)
    assert "[full HTML report](https://github.com/o/r/actions/runs/1/artifacts/2)" in text
    assert text.count("<details>") == text.count("</details>") >= 2
    assert "more lines cut to keep this comment under the code host's size limit" in text
    lines = text.splitlines()
    for above, row in itertools.pairwise(lines):  # GFM renders a table only if these agree
        if row.startswith("|---"):
            assert above.count("|") == row.count("|"), above
    assert "| `model_00_with_a_long_name` | 0.300 [0.25, 0.35] | 0.500 [0.45, 0.55] | **better" in text


def test_a_small_comment_is_whole_and_says_nothing_moved():
    from pipeline import review as V

    text = comment_for(3, 0, 5)
    assert "cut to keep" not in text and "No param changed" in text
    assert "reports/summary.html` in this run's artifacts" in text and not RELATIVE_LINK.search(text)
    forest = text[text.index("```text") : text.index("```", text.index("```text") + 3)]
    rows = [line for line in forest.splitlines() if line.startswith("model_")]
    assert [r.split()[0] for r in rows] == [
        "model_02_with_a_long_name",
        "model_01_with_a_long_name",
        "model_00_with_a_long_name",
    ]
    assert all(r.count("o") >= 1 and "-" in r and r.count("|") == 2 for r in rows)
    before = {m: fake_metrics(0.5, 0.05, 0.5) for m in ("a", "b")}
    for m in before.values():
        m["cv"]["interval"] = {"macro_f1": {"point": 0.5, "lo": 0.4, "hi": 0.6}}
    now = {k: json.loads(json.dumps(v)) for k, v in before.items()}
    now["b"]["cv"]["macro_f1"] = 0.52
    words = "\n".join(V.summary_line(before, now, [], "main"))
    assert "1 changed within the noise; 1 unchanged" in words and "No model moved outside the noise" in words


def test_headline_says_whether_a_change_is_outside_the_noise():
    from pipeline import review as V

    def m(point, lo, hi):
        return {"cv": {"macro_f1": point, "interval": {"macro_f1": {"point": point, "lo": lo, "hi": hi}}}}

    before = {"a": m(0.9, 0.85, 0.95), "b": m(0.9, 0.85, 0.95), "c": m(0.6, 0.5, 0.7), "d": m(0.9, 0.8, 1.0)}
    before["gone"] = m(0.5, 0.4, 0.6)
    before["old"] = {"test": {"macro_f1": 0.8}}  # metrics from before cross-validation: a single test split
    before["bare"] = {"cv": {"macro_f1": 0.7}}  # a CV score without an interval
    now = {"a": m(0.9, 0.85, 0.95), "b": m(0.92, 0.87, 0.97), "c": m(0.9, 0.85, 0.95), "d": m(0.5, 0.4, 0.6)}
    now["new"] = m(0.7, 0.6, 0.8)
    now["old"], now["bare"] = m(0.8, 0.7, 0.9), m(0.75, 0.7, 0.8)
    rows = {line.split("|")[1].strip(): line for line in V.headline_changes(before, now, "main")[6:]}
    assert rows["`a`"].endswith("| unchanged |")
    assert rows["`b`"].endswith("| changed within the noise |")
    assert "better, outside the noise" in rows["`c`"] and "worse, outside the noise" in rows["`d`"]
    assert rows["`new`"].endswith("| new model |") and rows["`gone`"].endswith("| removed |")
    assert "0.920 [0.87, 0.97]" in rows["`b`"]
    assert rows["`old`"].endswith("| not comparable (no cross-validated score at the base) |")
    assert rows["`bare`"].endswith("| changed (no interval on one side to judge it) |")


def test_report_stage_reads_the_per_model_folder():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "reports/models" in stages["report"]["deps"]  # any train.models list works, no edits to dvc.yaml
    assert stages["evaluate"]["metrics"] == [{"reports/models/${item.model}/metrics.json": {"cache": False}}]


def test_sweep_table_from_metrics_files(tmp_path):
    from pipeline import sweep

    rows = []
    for size, f1 in ((30, {"gru": 0.8, "lstm": 0.7}), (90, {"gru": 0.9, "lstm": 0.75})):
        for model, v in f1.items():
            d = tmp_path / "models" / model
            d.mkdir(parents=True, exist_ok=True)
            iv = {"macro_f1": {"point": v, "lo": v - 0.1, "hi": v + 0.05}}
            (d / "metrics.json").write_text(json.dumps({"cv": {"macro_f1": v, "interval": iv}, "gap": 0.0}))
        rows += sweep.collect(tmp_path, size)
    t = sweep.table(rows)
    assert list(t.index) == ["gru", "lstm"] and list(t.columns) == [30, 90]
    assert t.loc["gru", 90] == 0.9


def test_models_inside_the_noise_are_reported_as_a_tie_and_the_smallest_is_named():
    import numpy as np

    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(8)], 20)
    y = np.tile(np.arange(2), 80)
    good = np.where(rng.random(160) < 0.9, y, 1 - y)
    almost = good.copy()
    almost[:3] = 1 - almost[:3]  # three windows apart: inside the noise
    bad = np.where(rng.random(160) < 0.55, y, 1 - y)
    metrics = {
        "bilstm": fake_metrics(0.9, 0.0, 0.5),
        "gru": fake_metrics(0.88, 0.0, 0.5),
        "stats_lr": fake_metrics(0.5, 0, 0),
    }
    metrics["gru"]["parameters"] = 10
    preds = {"bilstm": good, "gru": almost, "stats_lr": bad}
    metrics["bilstm"]["cv"]["macro_f1"] = 1.0  # the best by point estimate
    paired = R.paired_comparisons(metrics, y, preds, subjects, 2)
    assert not paired["gru"]["vs_best"].excludes_zero()
    assert paired["stats_lr"]["vs_best"].excludes_zero()
    assert R.tied_with_best(paired) == ["bilstm", "gru"]
    assert R.smallest(metrics, R.tied_with_best(paired)) == "gru"
    table = "\n".join(R.paired_table(metrics, paired, 8))
    assert "| `gru` | 0.880 |" in table and "| tie |" in table and "| worse |" in table


def test_the_workflow_keeps_one_comment_and_reuses_outputs():
    """The CI workflow finds its earlier comment by the marker the builder writes, links the uploaded
    report, and runs the pipeline between a pull and a push of the DVC remote (with the run-cache)."""
    from pipeline import review as V

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "pipeline.yml").read_text())
    steps = wf["jobs"]["repro"]["steps"]
    script = "\n".join(str(s.get("run", "")) for s in steps)
    assert V.MARKER in script and "-X PATCH" in script and "gh pr comment" in script
    assert "--report-url" in script and "steps.report.outputs.artifact-url" in script
    order = [s.get("run", "").split()[:2] for s in steps if "make" in str(s.get("run", ""))]
    assert ["make", "test"] in order
    assert script.index("make pull") < script.index("make run") < script.index("make push")
    assert any(
        s.get("uses", "").startswith("actions/cache/restore") and s["with"]["path"] == ".dvc/remote" for s in steps
    )
    make = (ROOT / "Makefile").read_text()
    assert "dvc pull --run-cache --allow-missing" in make and "dvc push --run-cache" in make
    config = (ROOT / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = remote" in config  # the embedded default: .dvc/remote
    assert "/remote" in (ROOT / ".dvc" / ".gitignore").read_text().split()


def test_per_fold_table_shows_pooled_beside_the_fold_mean_and_flags_a_pooled_score_above_every_fold():
    majority = fake_metrics(0.29, 0.0, 0.0)  # each fold predicts its own majority class: 0.17-0.21 per fold
    majority["cv"]["per_fold"] = {str(f): {"test_f1": 0.17 + 0.008 * f} for f in range(6)}
    good = fake_metrics(0.80, 0.1, 0.7)  # pooled among its folds' scores (0.80-0.85): not flagged
    assert R.pooled_above_folds(majority) and not R.pooled_above_folds(good)
    lines = R.per_fold_table({"majority": majority, "gru": good})
    assert lines[4].endswith("| mean | sd | pooled |")
    row = {ln.split("|")[1].strip(): ln for ln in lines if ln.startswith("| `")}
    assert row["`majority`"].endswith("| 0.190 | 0.014 | 0.290 **above every fold** |")
    assert row["`gru`"].endswith("| 0.825 | 0.017 | 0.800 |")
