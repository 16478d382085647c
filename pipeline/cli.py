"""``python -m pipeline.cli``: tools around the pipeline (the stages run as ``python -m pipeline.stages``).

python -m pipeline.cli pr-comment --base origin/main --out comment.md
python -m pipeline.cli sweep --sizes 30 --sizes 90
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
) -> None:
    """A pull-request comment: recommendation and comparison plus `dvc metrics/params diff` against BASE."""
    from pipeline.stages.report import pr_comment as build

    def work() -> None:
        text = build(base, load_params(params), reports_dir, windows_dir, quarantine)
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


if __name__ == "__main__":  # pragma: no cover
    app()
