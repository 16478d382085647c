"""Command line: one sub-command per stage, each a thin wrapper over ``<stage>.run``.

python -m pipeline.cli frames --params params.yaml
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import ConfigError, load_params
from pipeline.labels import LabelsError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Driver-behaviour pipeline stages."
)
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
FramesDir = Annotated[Path, typer.Option("--frames", help="frames stage folder")]
LandmarksDir = Annotated[Path, typer.Option("--landmarks", help="landmarks stage folder")]
FeaturesPath = Annotated[Path, typer.Option("--features", help="features Parquet")]
WindowsDir = Annotated[Path, typer.Option("--windows", help="windows folder")]
ModelsDir = Annotated[Path, typer.Option("--models", help="trained models folder")]
ReportsDir = Annotated[Path, typer.Option("--reports", help="reports folder")]
QuarantinePath = Annotated[Path, typer.Option("--quarantine", help="merged quarantine list")]
ModelName = Annotated[str, typer.Option("--model", help="a name from params train.models")]


def _reproducible_math() -> None:
    """Ask MKL for conditional numerical reproducibility before torch loads it: without it MKL
    may pick kernels by memory alignment, so two runs on the same data can differ in the last
    bits and early stopping can then choose another epoch (seen once for stacked_bilstm)."""
    import os

    os.environ.setdefault("MKL_CBWR", "AUTO")


def _run(fn, *args) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)  # our progress lines; libraries stay quiet
    try:
        summary = fn(*args)
    except (ConfigError, LabelsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        # data problems found by a stage: a clear message, no traceback
        if type(exc).__name__ not in ("SplitError", "ValidationFailed"):
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(summary, sort_keys=True))


@app.command()
def demo(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="folder to write: videos/ + labels.csv")] = Path("data/demo"),
) -> None:
    """Generate the synthetic demo videos and labels.csv."""
    from pipeline import demo as stage

    _run(lambda: stage.run(load_params(params), out))


@app.command()
def frames(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/frames"),
) -> None:
    """Validate labels, then plan fixed-fps letterboxed frames for every video."""
    from pipeline import frames as stage

    _run(lambda: stage.run(load_params(params), out))


@app.command()
def landmarks(
    params: ParamsOpt = Path("params.yaml"),
    frames_dir: FramesDir = Path("data/frames"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/landmarks"),
) -> None:
    """MediaPipe FaceMesh (+ Hands) landmarks per video, in source pixels."""
    from pipeline import landmarks as stage

    _run(lambda: stage.run(load_params(params), frames_dir, out))


@app.command()
def features(
    params: ParamsOpt = Path("params.yaml"),
    landmarks_dir: LandmarksDir = Path("data/landmarks"),
    frames_dir: FramesDir = Path("data/frames"),
    out: Annotated[Path, typer.Option(help="features Parquet")] = Path("data/features.parquet"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """Per-frame features from landmarks into one Parquet file."""
    from pipeline import features as stage

    _run(lambda: stage.run(load_params(params), landmarks_dir, frames_dir, out, quarantine))


@app.command()
def windows(
    params: ParamsOpt = Path("params.yaml"),
    features_path: FeaturesPath = Path("data/features.parquet"),
    out: Annotated[Path, typer.Option(help="output folder")] = Path("data/windows"),
) -> None:
    """Fixed-length windows, split by subject, normalised on train."""
    from pipeline import windows as stage

    _run(lambda: stage.run(load_params(params), features_path, out))


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    features_path: FeaturesPath = Path("data/features.parquet"),
    windows_dir: WindowsDir = Path("data/windows"),
    out: Annotated[Path, typer.Option(help="report folder")] = Path("reports/validation"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """Great Expectations suites on features and windows; fails on a broken contract."""
    from pipeline import validate as stage

    _run(lambda: stage.run(load_params(params), features_path, windows_dir, out, quarantine))


@app.command()
def train(
    model: ModelName,
    params: ParamsOpt = Path("params.yaml"),
    windows_dir: WindowsDir = Path("data/windows"),
    models_dir: ModelsDir = Path("models"),
    reports_dir: ReportsDir = Path("reports/models"),
) -> None:
    """Train one model of the zoo (or a baseline) on the windows."""
    _reproducible_math()
    from pipeline import train as stage

    _run(lambda: stage.run(load_params(params), model, windows_dir, models_dir, reports_dir))


@app.command()
def evaluate(
    model: ModelName,
    params: ParamsOpt = Path("params.yaml"),
    windows_dir: WindowsDir = Path("data/windows"),
    models_dir: ModelsDir = Path("models"),
    reports_dir: ReportsDir = Path("reports/models"),
) -> None:
    """Metrics, operating points and explanations for one trained model."""
    _reproducible_math()
    from pipeline import evaluate as stage

    _run(lambda: stage.run(load_params(params), model, windows_dir, models_dir, reports_dir))


@app.command()
def report(
    params: ParamsOpt = Path("params.yaml"),
    reports_dir: ReportsDir = Path("reports"),
    windows_dir: WindowsDir = Path("data/windows"),
    quarantine: QuarantinePath = Path("data/quarantine.json"),
) -> None:
    """The comparison of all models: reports/summary.md + summary.html."""
    from pipeline import report as stage

    _run(lambda: stage.run(load_params(params), reports_dir, windows_dir, quarantine))


@app.command("pr-comment")
def pr_comment(
    base: Annotated[str, typer.Option(help="git revision to compare against, e.g. origin/main")] = "main",
    reports_dir: ReportsDir = Path("reports"),
    out: Annotated[Path | None, typer.Option(help="write here instead of stdout")] = None,
) -> None:
    """A pull-request comment: the summary plus `dvc metrics diff` and `dvc params diff` against BASE."""
    from pipeline.report import pr_comment as build

    text = build(base, reports_dir)
    if out is None:
        typer.echo(text)
    else:
        out.write_text(text)


@app.command()
def sweep(
    sizes: Annotated[list[int], typer.Option("--sizes", help="window sizes (frames) to try")] = [30, 60, 90, 120],  # noqa: B006
) -> None:
    """Window-size sweep as DVC experiments, printed as one macro-F1 table."""
    from pipeline import sweep as s

    s.run(sizes)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
