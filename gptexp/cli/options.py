"""Options shared by several commands, defined once: `--runs-dir` and the lookup of a RUN argument."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptexp.cli.errors import fail
from gptexp.contract import ENV_RUNS_DIR

RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar=ENV_RUNS_DIR, help=f"where runs live (env {ENV_RUNS_DIR})")]
"""Every command that reads or writes runs takes this option, with this default: `Path("runs")`."""

DEFAULT_RUNS_DIR = Path("runs")


def checked_runs_dir(runs_dir: Path) -> Path:
    """`runs_dir` if it can hold runs (it may not exist yet); else exit 2 naming it."""
    if runs_dir.exists() and not runs_dir.is_dir():
        fail(f"--runs-dir {runs_dir}: not a directory")
    return runs_dir


def resolve_run(runs_dir: Path, run: str) -> Path:
    """The directory of RUN (a run id in `runs_dir`, or a run directory); exit 2 if there is none."""
    from gptexp.tracking import run_dir_for

    return run_dir_for(checked_runs_dir(runs_dir), run)  # RunStoreError -> exit 2 (errors.py)
