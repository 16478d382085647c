"""`validate` stage: Great Expectations suites that gate the run.

Two suites, built from the feature registry and params: ``features`` (schema, each
feature's expected range, non-null where a face was found, labels in the class set,
time increasing per video, face-detection rate per video) and ``windows`` (shape, no
infinite value, labels in the class set, unique ids, no subject in two cross-validation
folds, every class in every fold, class balance). Expectations are ``critical`` (the stage exits non-zero,
so `dvc repro` stops, naming the expectation and the offending videos or rows) or
``warning`` (reported, the run goes on). Results: ``reports/validation/summary.md``
and ``results.json``. Great Expectations is imported here only (it takes ~8 s).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contracts.features import ID_COLUMNS, REGISTRY, iter_features, read_features
from pipeline.contracts.quarantine import read_quarantine
from pipeline.contracts.windows import FILE, count_inf, read_index, read_meta
from pipeline.core.config import Params, load_params
from pipeline.core.errors import ValidationFailed
from pipeline.core.files import atomic_path, write_json
from pipeline.core.runtime import FeaturesPath, ParamsOpt, QuarantinePath, WindowsDir, run_stage

log = logging.getLogger(__name__)
MAX_SHOWN = 10  # offending rows listed per failed expectation
Part = tuple[str, pd.DataFrame]  # a table's name and (some of) its rows


@dataclass
class Check:
    """One expectation on one table, with the columns that identify offending rows."""

    table: str
    expectation: Any
    id_columns: list[str]
    why: str


@dataclass
class Outcome:
    table: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    why: str
    unexpected_count: int = 0
    offending: list[dict] = field(default_factory=list)

    def line(self) -> str:
        where = f" on '{self.column}'" if self.column else ""
        rows = "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in self.offending[:MAX_SHOWN])
        more = f" (+{self.unexpected_count - MAX_SHOWN} more)" if self.unexpected_count > MAX_SHOWN else ""
        return f"{self.expectation}{where} [{self.table}]: {self.why}. {self.unexpected_count} offending: {rows}{more}"


# --- the tables the suites run on ---------------------------------------------------------
def per_video_table(features: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A per-video summary of the frames (face rate, time order)."""
    per_video = features.groupby("video", observed=True, sort=True).agg(
        subject=("subject", "first"),
        frames=("frame", "size"),
        face_fraction=("face_present", "mean"),
        t_increasing=("t", lambda t: bool(np.all(np.diff(t.to_numpy()) > 0))),
    )
    return {"features_per_video": per_video.reset_index()}


def window_tables(x_len: int, x_inf: np.ndarray, index: pd.DataFrame, meta: dict) -> dict[str, pd.DataFrame]:
    """Per-window index (with values per window ``x_len`` and infinite-value counts ``x_inf``),
    per-subject folds, per fold x class counts."""
    win = index.copy()
    win["x_len"] = np.full(len(win), x_len, np.int64)
    win["x_inf"] = x_inf
    folds = range(int(meta["folds"]))
    subj = win.groupby("subject", observed=True)["fold"].agg(lambda s: ",".join(map(str, sorted(set(s)))))
    subj = subj.rename("folds").reset_index()
    subj["n_folds"] = subj["folds"].str.count(",") + 1
    cover = pd.DataFrame([(f, c) for f in folds for c in meta["classes"]], columns=["fold", "label"])
    counts = win.assign(label=win["label"].astype(str)).groupby(["fold", "label"]).size().rename("windows")
    cover = cover.merge(counts.reset_index(), on=["fold", "label"], how="left").fillna({"windows": 0})
    bal = cover.groupby("fold")["windows"].agg(["max", "min"]).reset_index()
    bal["imbalance"] = bal["max"] / bal["min"].clip(lower=1)
    return {"windows": win, "window_subjects": subj, "window_classes": cover, "window_balance": bal}


# --- the suites ----------------------------------------------------------------------------
def feature_checks(params: Params) -> list[Check]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    classes = list(params.data.classes)
    checks = [
        Check(
            "features",
            gxe.ExpectTableColumnsToMatchSet(
                column_set=[*ID_COLUMNS, *REGISTRY, "face_filled", "stale"], exact_match=False
            ),
            [],
            "the features schema",
        )
    ]
    for f in REGISTRY.values():
        checks.append(
            Check(
                "features",
                gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.lo, max_value=f.hi),
                ["video", "frame"],
                f"{f.name} in {f.lo:g}..{f.hi:g} {f.unit}",
            )
        )
        if f.face_derived:
            checks.append(
                Check(
                    "features",
                    gxe.ExpectColumnValuesToNotBeNull(column=f.name, row_condition=Column("face_present") == 1),
                    ["video", "frame"],
                    f"{f.name} must be set wherever a face was found",
                )
            )
    checks += [
        Check("features", gxe.ExpectColumnValuesToNotBeNull(column=c), ["video", "frame"], f"{c} must be set")
        for c in ("video", "subject", "frame", "t", "face_present", "hand_present")
    ]
    checks += [
        Check(
            "features",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            ["video", "frame"],
            f"labels must be one of {classes}",
        ),
        Check(
            "features_per_video",
            gxe.ExpectColumnValuesToBeInSet(column="t_increasing", value_set=[True]),
            ["video"],
            "time must increase within each video",
        ),
        Check(
            "features_per_video",
            gxe.ExpectColumnValuesToBeBetween(
                column="face_fraction", min_value=params.validate.min_video_face_fraction, severity="warning"
            ),
            ["video"],
            f"a face in >= {params.validate.min_video_face_fraction:.0%} of each video's frames",
        ),
    ]
    return checks


def window_checks(params: Params, meta: dict) -> list[Check]:
    import great_expectations.expectations as gxe

    classes = list(meta["classes"])
    size = int(meta["window"]) * len(meta["features"])
    return [
        Check(
            "windows",
            gxe.ExpectColumnValuesToBeBetween(column="x_len", min_value=size, max_value=size),
            ["window_id"],
            f"every window holds window x features = {size} values",
        ),
        Check(
            "windows",
            gxe.ExpectColumnValuesToBeBetween(column="x_inf", min_value=0, max_value=0),
            ["window_id", "video"],
            "windows must hold no infinite value (NaN = not observed is allowed)",
        ),
        Check(
            "windows",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
            ["window_id", "video"],
            f"labels must be one of {classes}",
        ),
        Check(
            "windows", gxe.ExpectColumnValuesToBeUnique(column="window_id"), ["window_id"], "window ids must be unique"
        ),
        Check(
            "windows",
            gxe.ExpectColumnValuesToBeBetween(column="fold", min_value=0, max_value=int(meta["folds"]) - 1),
            ["window_id", "fold"],
            f"folds are numbered 0..{int(meta['folds']) - 1}",
        ),
        Check(
            "window_subjects",
            gxe.ExpectColumnValuesToBeBetween(column="n_folds", min_value=1, max_value=1),
            ["subject", "folds"],
            "a subject's windows must all be in one fold (else cross-validation leaks)",
        ),
        Check(
            "window_classes",
            gxe.ExpectColumnValuesToBeBetween(column="windows", min_value=1),
            ["fold", "label"],
            "every class needs windows in every fold",
        ),
        Check(
            "window_balance",
            gxe.ExpectColumnValuesToBeBetween(
                column="imbalance", max_value=params.validate.max_class_imbalance, severity="warning"
            ),
            ["fold", "max", "min"],
            f"largest class over smallest within {params.validate.max_class_imbalance:g}x",
        ),
    ]


# --- running them ----------------------------------------------------------------------------
def run_checks(
    tables: dict[str, pd.DataFrame] | Iterable[tuple[str, pd.DataFrame]], checks: list[Check]
) -> list[Outcome]:
    """Validate each table with its checks in an ephemeral GX context. A table may come in several
    parts (the same name again: batches of rows); each check's outcome is then merged over them
    (failed if any part failed, offending rows counted over all, the first ones listed)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in ["great_expectations", *logging.root.manager.loggerDict]:  # GX sets INFO on some at import
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.WARNING)

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = ctx.data_sources.add_pandas("pipeline")
    outcomes: dict[tuple[str, int], Outcome] = {}
    assets: dict[str, Any] = {}
    for name, df in tables.items() if isinstance(tables, dict) else tables:
        mine = [c for c in checks if c.table == name]
        if not mine:
            continue
        if name not in assets:
            assets[name] = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        batch = assets[name].get_batch(batch_parameters={"dataframe": df})
        for i, c in enumerate(mine):
            fmt: dict[str, Any] = {"result_format": "COMPLETE"}
            if c.id_columns:
                fmt["unexpected_index_column_names"] = c.id_columns
            r = batch.validate(c.expectation, result_format=fmt)
            cfg = r.expectation_config
            res = r.result or {}
            offending = [
                {k: _plain(v) for k, v in row.items()} for row in (res.get("unexpected_index_list") or [])[:MAX_SHOWN]
            ]
            if not r.success and not offending and r.exception_info.get("raised_exception"):
                offending = [{"error": r.exception_info.get("exception_message")}]
            o = Outcome(
                table=name,
                expectation=cfg.type,
                column=cfg.kwargs.get("column"),
                severity=str(getattr(cfg.severity, "value", cfg.severity)).lower(),
                success=bool(r.success),
                why=c.why,
                unexpected_count=int(res.get("unexpected_count") or (0 if r.success else 1)),
                offending=offending,
            )
            seen = outcomes.setdefault((name, i), o)
            if seen is not o:  # another part of the same table
                seen.success &= o.success
                seen.unexpected_count += o.unexpected_count
                seen.offending = (seen.offending + o.offending)[:MAX_SHOWN]
    return list(outcomes.values())


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return "NaN"
    return v


def summary_markdown(outcomes: list[Outcome], facts: dict) -> str:
    """The report a reviewer reads: status, failures first, then every expectation."""
    crit = [o for o in outcomes if not o.success and o.severity == "critical"]
    warn = [o for o in outcomes if not o.success and o.severity != "critical"]
    status = "FAILED" if crit else ("PASSED with warnings" if warn else "PASSED")
    lines = [f"# Data validation: {status}", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += ["", f"{len(outcomes)} expectations, {len(crit)} critical failures, {len(warn)} warnings.", ""]
    for title, group in (("Critical failures", crit), ("Warnings", warn)):
        if group:
            lines += [f"## {title}", ""] + [f"- {o.line()}" for o in group] + [""]
    lines += [
        "## All expectations",
        "",
        "| table | expectation | column | severity | result | offending |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        result = "pass" if o.success else "FAIL"
        count = "" if o.success else o.unexpected_count
        lines.append(f"| {o.table} | {o.expectation} | {o.column or ''} | {o.severity} | {result} | {count} |")
    return "\n".join(lines) + "\n"


# Frames the per-frame suite validates at once: its memory is that of one batch, not of the table.
FRAME_BATCH = 500_000
PER_VIDEO_COLUMNS = ["video", "subject", "frame", "t", "face_present"]


def frame_batches(features: pd.DataFrame | Path, size: int | None = None) -> Iterator[pd.DataFrame]:
    """The features table in batches of ``size`` (FRAME_BATCH) rows: of a table in memory, or read
    from a features.parquet batch by batch."""
    size = size or FRAME_BATCH
    if isinstance(features, pd.DataFrame):
        for i in range(0, max(1, len(features)), size):
            yield features.iloc[i : i + size].reset_index(drop=True)
    else:
        yield from iter_features(features, size)


def validate(params: Params, features: pd.DataFrame | Path, windows_dir: Path) -> tuple[list[Outcome], dict]:
    """Run both suites on the features (a table, or the path of features.parquet: then read in
    batches of FRAME_BATCH frames) and the windows; returns outcomes and headline facts (no files
    written)."""
    import pyarrow.parquet as pq

    if isinstance(features, pd.DataFrame):
        narrow = features[[c for c in PER_VIDEO_COLUMNS if c in features]]
    else:
        narrow = read_features(features, PER_VIDEO_COLUMNS)
    meta, index = read_meta(windows_dir), read_index(windows_dir)
    x_len = pq.read_schema(Path(windows_dir) / FILE).field("x").type.list_size  # values per window, as stored
    tables = itertools.chain(
        (("features", b) for b in frame_batches(features)),
        per_video_table(narrow).items(),
        window_tables(x_len, count_inf(windows_dir), index, meta).items(),
    )
    checks = feature_checks(params) + window_checks(params, meta)
    outcomes = run_checks(tables, checks)
    facts = {
        "videos": narrow["video"].nunique(),
        "subjects": narrow["subject"].nunique(),
        "frames": len(narrow),
        "face detected": f"{narrow['face_present'].mean():.1%} of frames",
        "windows": f"{len(index)} in {meta['folds']} subject-grouped folds",
    }
    return outcomes, facts


def quarantine_facts(path: Path | None) -> dict[str, str]:
    """Headline of the quarantine list (data/quarantine.json), for the report."""
    q = read_quarantine(path)
    items = [f"{v['video']} ({v['stage']}: {v['reason']})" for v in q.get("quarantined", [])]
    facts = {"quarantined inputs": f"{len(items)}" + (": " + "; ".join(items) if items else "")}
    if q.get("ignored_files"):
        facts["files not in labels.csv (ignored)"] = ", ".join(q["ignored_files"])
    if q.get("warnings"):
        facts["input warnings"] = f"{len(q['warnings'])}: " + "; ".join(
            f"{w['video']} ({w['stage']}: {w['warning']})" for w in q["warnings"]
        )
    return facts


def run(
    params: Params, features_path: Path, windows_dir: Path, out_dir: Path, quarantine_path: Path | None = None
) -> dict:
    """Validate, write the report, raise :class:`ValidationFailed` on critical failures."""
    outcomes, facts = validate(params, features_path, windows_dir)
    facts |= quarantine_facts(quarantine_path)
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text(summary_markdown(outcomes, facts))
    write_json(out_dir / "results.json", {"facts": facts, "results": [o.__dict__ for o in outcomes]})
    crit = [o for o in outcomes if not o.success and o.severity == "critical"]
    for o in outcomes:
        if not o.success and o.severity != "critical":
            log.warning("validation warning: %s", o.line())
    if "input warnings" in facts:
        log.warning("input warnings (reports/validation/summary.md): %s", facts["input warnings"])
    if crit:
        raise ValidationFailed(
            f"{len(crit)} critical expectation(s) failed (report: {out_dir / 'summary.md'}):\n"
            + "\n".join(f"  - {o.line()}" for o in crit)
        )
    return {"expectations": len(outcomes), "warnings": sum(not o.success for o in outcomes)}


def main(
    params: ParamsOpt = Path("params.yaml"),
    features_path: FeaturesPath = Path("data/features.parquet"),
    windows_dir: WindowsDir = Path("data/windows"),
    out: Path = Path("reports/validation"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """Great Expectations suites on features and windows; fails on a broken contract."""
    run_stage(lambda: run(load_params(params), features_path, windows_dir, out, quarantine))
