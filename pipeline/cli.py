"""``driver-pipeline`` (= ``python -m pipeline.cli``): tools around the pipeline (the stages run as
``python -m pipeline.stages``) and the three ways to use a trained model (README "Use a trained model").

driver-pipeline predict drive.mp4                      # timeline, segments, alerts -> predictions/
driver-pipeline monitor 0                              # camera 0: alerts as JSON lines
driver-pipeline export --out driver_model.pt           # TorchScript file the monitor can run
driver-pipeline pr-comment --base origin/main --out comment.md
driver-pipeline sweep --sizes 30 --sizes 90
driver-pipeline dask-worker tcp://10.0.0.5:8786       # a Dask worker for the stages and the training matrix
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.core.config import load_params
from pipeline.core.runtime import ParamsOpt, QuarantinePath, ReportsDir, WindowsDir, run_stage

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Driver-behaviour pipeline tools."
)


@app.command("pr-comment")
def pr_comment(
    base: Annotated[str, typer.Option(help="git revision to compare against, e.g. origin/main")] = "main",
    params: ParamsOpt = Path("params.yaml"),
    reports_dir: ReportsDir = Path("reports"),
    windows_dir: WindowsDir = Path("data/windows"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
    report_url: Annotated[str | None, typer.Option(help="link to the full HTML report (e.g. the CI artifact)")] = None,
    run_url: Annotated[str | None, typer.Option(help="link to the CI run")] = None,
) -> None:
    """A pull-request comment (under 60,000 characters): what changed against BASE, outside or inside
    the noise, a text forest plot of every model's CV macro-F1, the folded tables and diffs."""
    from pipeline.review import pr_comment as build

    def work() -> None:
        text = build(base, load_params(params), reports_dir, windows_dir, quarantine, report_url, run_url)
        if out is None:
            typer.echo(text)
        else:
            out.write_text(text)

    run_stage(work)


@app.command()
def sweep(
    sizes: Annotated[list[int], typer.Option("--sizes", help="window sizes (frames) to try")] = [30, 60, 90, 120],  # noqa: B006
) -> None:
    """Window-size sweep as DVC experiments, printed as one macro-F1 table."""
    from pipeline import sweep as s

    run_stage(lambda: s.run(sizes) and None)


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="a trained model's name (models/<name>), an exported .pt file, or nothing: the report's "
        "recommendation for the mode",
    ),
]
ModeOpt = Annotated[str, typer.Option(help="alert (precision first: real-time) or report (recall first: post-hoc)")]
ThresholdOpt = Annotated[
    list[str], typer.Option("--threshold", help="override: CLASS=P for one class, or P for every class (repeatable)")
]
ModelsDirOpt = Annotated[Path, typer.Option("--models", help="trained models folder")]
UnfamiliarOpt = Annotated[
    bool,
    typer.Option(
        help="windows unlike the model's training windows are reported 'unfamiliar' and never alert "
        "(--no-unfamiliar: give them a class anyway)"
    ),
]


def _load(model: str | None, mode: str, models_dir: Path, reports_dir: Path):
    """Pin CPU numerics (same probabilities on any x86-64 CPU), then load the model once."""
    import sys

    from pipeline.apply.events import MODES
    from pipeline.apply.model import load_model
    from pipeline.core.errors import ConfigError

    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {list(MODES)}, got '{mode}'")
    if "torch" not in sys.modules:
        from pipeline.modeling import numerics

        numerics.pin(1)
    return load_model(model, mode, models_dir, reports_dir)


@app.command()
def predict(
    source: Annotated[
        Path, typer.Argument(help="a video file, a folder of videos, or a CSV (video[,subject,label,start_s,end_s])")
    ],
    out: Annotated[Path, typer.Option(help="output folder")] = Path("predictions"),
    model: ModelOpt = None,
    mode: ModeOpt = "alert",
    baseline: Annotated[
        str,
        typer.Option(
            help="driver baseline: subject (all their frames, as in training), calibrate (first seconds), none"
        ),
    ] = "subject",
    threshold: ThresholdOpt = [],  # noqa: B006
    annotate: Annotated[
        bool, typer.Option(help="also write annotated.mp4 per video (mesh, class, probabilities)")
    ] = False,
    workers: Annotated[int, typer.Option(help="videos measured at once (0 = all cores)")] = 0,
    unfamiliar: UnfamiliarOpt = True,
    params: ParamsOpt = Path("params.yaml"),
    models_dir: ModelsDirOpt = Path("models"),
    reports_dir: ReportsDir = Path("reports"),
) -> None:
    """Behaviour timelines, segments and alerts for recorded videos."""

    def work() -> dict:
        from pipeline.apply import predict as P
        from pipeline.apply.calibration import BASELINES
        from pipeline.apply.events import override_thresholds
        from pipeline.core.errors import ConfigError

        if baseline not in BASELINES:
            raise ConfigError(f"--baseline must be one of {list(BASELINES)}, got '{baseline}'")
        ap = load_params(params).apply
        m = _load(model, mode, models_dir, reports_dir)
        thr = override_thresholds(m.thresholds[mode], threshold) if threshold else None
        o = P.Options(
            mode, baseline, ap.calibration_s, ap.alert_clear_s, ap.quiet_class, thr, annotate, workers, unfamiliar
        )
        return P.run(source, m, out, o)

    run_stage(work)


@app.command()
def monitor(
    source: Annotated[
        str, typer.Argument(help="camera index (0), stream URL (rtsp://..., http://...) or a video file")
    ],
    model: ModelOpt = None,
    mode: ModeOpt = "alert",
    threshold: ThresholdOpt = [],  # noqa: B006
    fast: Annotated[bool, typer.Option(help="a file is processed as fast as possible, not at its own pace")] = False,
    show: Annotated[bool, typer.Option(help="on-screen overlay: mesh, class, probabilities (needs a display)")] = False,
    decisions: Annotated[bool, typer.Option(help="also print every window's probabilities")] = False,
    seconds: Annotated[float | None, typer.Option(help="stop after this much stream time")] = None,
    out: Annotated[Path | None, typer.Option(help="append the JSON lines to this file instead of stdout")] = None,
    unfamiliar: UnfamiliarOpt = True,
    params: ParamsOpt = Path("params.yaml"),
    models_dir: ModelsDirOpt = Path("models"),
    reports_dir: ReportsDir = Path("reports"),
) -> None:
    """Live alerts as JSON lines from a camera, a stream or a video file (headless by default)."""

    def work() -> dict:
        from pipeline.apply import monitor as M
        from pipeline.apply.events import override_thresholds

        ap = load_params(params).apply
        m = _load(model, mode, models_dir, reports_dir)
        thr = override_thresholds(m.thresholds[mode], threshold) if threshold else None
        o = M.MonitorOptions(
            mode,
            ap.calibration_s,
            ap.alert_clear_s,
            ap.quiet_class,
            thr,
            realtime=not fast,
            show=show,
            decisions=decisions,
            max_seconds=seconds,
            unfamiliar=unfamiliar,
        )
        if out is None:  # the summary is the last JSON line on stdout, printed by run_stage
            return {"event": "summary", **M.run(source, m, o, M.json_lines())}
        with out.open("a") as f:  # every line, the summary too, goes to the file; stdout stays empty
            emit = M.json_lines(f)
            emit({"event": "summary", **M.run(source, m, o, emit)})
        typer.echo(f"monitor: events and summary appended to {out}", err=True)
        return None

    run_stage(work)


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="the TorchScript file to write")] = Path("driver_model.pt"),
    model: Annotated[str | None, typer.Option(help="a trained model's name (default: the recommendation)")] = None,
    mode: ModeOpt = "alert",
    models_dir: ModelsDirOpt = Path("models"),
    reports_dir: ReportsDir = Path("reports"),
    windows_dir: WindowsDir = Path("data/windows"),
) -> None:
    """A trained model as one TorchScript file (normalisation, thresholds, settings inside), checked
    against the trained model on the stored windows."""

    def work() -> dict:
        from pipeline.apply import export as X
        from pipeline.core.errors import ModelError

        m = _load(model, mode, models_dir, reports_dir)
        if m.source.endswith(".pt"):
            raise ModelError(f"{m.source} is already an exported file")
        res = X.export(m, Path(m.source), out)
        if (windows_dir / "meta.json").exists():
            res["parity"] = X.parity(m, out, windows_dir)
            if res["parity"]["max_abs_diff"] > 1e-5:
                raise ModelError(
                    f"{out}: exported probabilities differ from the trained model's by up to "
                    f"{res['parity']['max_abs_diff']:.2g} (> 1e-5); please report this as a bug"
                )
        return res

    run_stage(work)


@app.command("import")
def import_(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="dmd, uta-rldd or yawdd")],
    source: Annotated[Path, typer.Argument(help="the data set's root folder (becomes data.raw_dir)")],
    params: ParamsOpt = Path("params.yaml"),
    labels_file: Annotated[str, typer.Option(help="the labels file written into SOURCE")] = "labels.csv",
    force: Annotated[bool, typer.Option(help="overwrite an existing labels file")] = False,
) -> None:
    """A public data set's annotations -> SOURCE/labels.csv (checked) and params.yaml's data section
    (raw_dir, classes, label_map: the data set's own labels -> classes)."""
    from pipeline import importers

    def work() -> dict:
        res = importers.run(fmt, source, params, labels_file, force)
        for item in res["not_imported"]:
            typer.echo(f"not imported: {item}", err=True)
        for note in res["notes"]:
            typer.echo(f"note: {note}", err=True)
        typer.echo(
            f"{fmt}: {res['rows']} labelled row(s), {res['videos']} video(s) of {res['subjects']} subject(s) -> "
            f"{res['labels']}; classes {res['classes']} in {res['params']} (data section); run `dvc repro`",
            err=True,
        )
        return {k: res[k] for k in ("format", "videos", "subjects", "labels_found", "classes")}

    run_stage(work)


@app.command()
def fingerprint(
    reference: Annotated[
        Path | None, typer.Option(help="compare with this reference (default: the committed one)")
    ] = None,
    write: Annotated[Path | None, typer.Option(help="write this machine's fingerprint here (a new reference)")] = None,
) -> None:
    """Hash the numerical kernels training and features use; compare with the committed reference.

    Exit 1 when an op differs: this CPU computes other bytes than the machine that made the reference."""
    import json

    from pipeline.core.errors import DataError
    from pipeline.modeling import fingerprint as fp

    def work() -> None:
        got = fp.fingerprint()
        if write is not None:
            write.write_text(json.dumps(got, indent=1) + "\n")
            typer.echo(f"wrote {write}: {len(got['ops'])} ops on {got['cpu']}")
            return
        ref_path = reference or fp.REFERENCE
        ref = json.loads(ref_path.read_text())
        diff = fp.differences(got, ref)
        for k in diff:
            typer.echo(f"DIFFERS  {k}")
        if diff:
            raise DataError(
                f"{len(diff)} of {len(got['ops'])} kernels give other bytes on this CPU ({got['cpu']}) than in "
                f"{ref_path} ({ref['cpu']}): trained models will differ; see README 'Same bytes on any CPU'"
            )
        typer.echo(f"all {len(got['ops'])} kernels give the reference bytes ({got['cpu']} vs {ref['cpu']})")

    run_stage(work)


@app.command("dask-worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dask_worker(
    ctx: typer.Context,
    print_env: Annotated[bool, typer.Option("--print-env", help="print the variables instead (KEY=VALUE)")] = False,
) -> None:
    """`dask worker` with the pipeline's pinned CPU numerics (other arguments go to it), e.g.
    `driver-pipeline dask-worker tcp://10.0.0.5:8786 --nworkers 2 --nthreads 1`.

    Plain `dask worker` loads numpy before anything of the pipeline, with this CPU's own kernels, and
    its results would differ from a local run; the pipeline refuses to compute there."""
    import os
    import sys

    from pipeline.modeling.numerics import PINNED_ENV

    if print_env:
        for k, v in sorted(PINNED_ENV.items()):
            typer.echo(f"{k}={v}")
        return
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", *ctx.args]
    os.execve(sys.executable, argv, {**os.environ, **PINNED_ENV})


if __name__ == "__main__":  # pragma: no cover
    app()
