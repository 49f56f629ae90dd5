"""Options shared by several commands, defined once: `--runs-dir` and the lookup of a RUN argument."""

from __future__ import annotations

import tempfile
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


def writable_runs_dir(runs_dir: Path) -> Path:
    """`runs_dir`, created if needed, once a file could be written in it; else exit 2 naming it.

    Checked by writing, not with os.access: root passes every permission check, yet a read-only
    filesystem or a path under a regular file still refuses.
    """
    checked_runs_dir(runs_dir)
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as error:
        fail(f"--runs-dir {runs_dir}: cannot write there ({error.strerror or error})")
    return runs_dir


def writable_file(path: Path, flag: str) -> Path:
    """`path` once its directory exists (created if needed) and takes a new file; else exit 2."""
    if path.is_dir():
        fail(f"{flag} {path}: is a directory, expected a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        fail(f"{flag} {path}: cannot write there ({error.strerror or error})")
    return path


def resolve_run(runs_dir: Path, run: str) -> Path:
    """The directory of RUN (a run id in `runs_dir`, or a run directory); exit 2 if there is none."""
    from gptexp.tracking import run_dir_for

    return run_dir_for(checked_runs_dir(runs_dir), run)  # RunStoreError -> exit 2 (errors.py)
