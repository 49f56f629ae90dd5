"""`gptexp diff RUN RUN [RUN...]`: the resolved-spec fields that differ between runs, then their metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gptexp.cli.console import wide_console
from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, resolve_run


def diff(
    runs: Annotated[list[str], typer.Argument(metavar="RUN RUN [RUN]...", help="two or more runs (ids or directories)", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON: {runs, fields: {path: [value per run]}, metrics: {name: [value per run]}}")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Show what differs between runs: every resolved-spec field (dotted path) whose values are
    not the same in all of them, one column per run, then each run's status and final and best
    val/bpb (with its step), val/loss, val/acc, steps and wall time."""
    from gptexp.report.compare import run_diff
    from gptexp.report.terminal import diff_table
    from gptexp.tracking import load_run

    if len(runs) < 2:
        fail("give at least two runs to compare")
    if len(set(runs)) < len(runs):
        fail("a run is named twice")
    records = [load_run(resolve_run(runs_dir, run)) for run in runs]  # RunStoreError: exit 2
    result = run_diff(records)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    wide_console().print(diff_table(result))
