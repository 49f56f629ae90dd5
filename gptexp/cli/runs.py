"""`gptexp runs`: the table (or JSON rows) of the runs in a runs directory."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from gptexp.cli.console import note, wide_console
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir


def runs(
    group: Annotated[Optional[str], typer.Option("--group", help="only runs of this W&B group")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="only trials of this Optuna study")] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="only runs with this status (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows instead of a table")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """A table of runs: id, name, status, tokenizer, objective, parameters, steps, val metrics."""
    from gptexp.report import filter_runs, runs_rows, runs_table
    from gptexp.tracking import list_runs

    runs_dir = checked_runs_dir(runs_dir)
    records = filter_runs(list_runs(runs_dir), group=group, study=study, statuses=status)
    rows = runs_rows(records)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        note(f"no runs in {runs_dir}", style="")
        return
    wide_console().print(runs_table(rows))
