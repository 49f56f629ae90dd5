"""`gptexp runs`: the table (or JSON rows) of the runs in a runs directory, once or live (--watch)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gptexp.cli.console import note, stdout, wide_console
from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir

MIN_INTERVAL_S = 0.1


def runs(
    group: Annotated[Optional[str], typer.Option("--group", help="only runs of this W&B group")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="only trials of this Optuna study")] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="only runs with this status (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows instead of a table")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="refresh the table in place until Ctrl-C (running runs show their latest eval)")] = False,
    interval: Annotated[float, typer.Option("--interval", metavar="SECONDS", help="--watch: seconds between refreshes")] = 2.0,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """A table of runs: id, name, status, tokenizer, objective, parameters, steps, val metrics.

    A run directory that cannot be read (a broken spec.yaml, JSON of the wrong shape) is left out
    and named on stderr. With --watch the table is redrawn every --interval seconds (in place on a
    terminal; a new table each time in a pipe) until Ctrl-C, which exits 0.
    """
    runs_dir = checked_runs_dir(runs_dir)
    if watch:
        if as_json:
            fail("--watch draws a table; leave out --json (or poll `gptexp runs --json` yourself)")
        if not MIN_INTERVAL_S <= interval <= 3600:
            fail(f"--interval {interval}: expected {MIN_INTERVAL_S} to 3600 seconds")
        _watch(runs_dir, interval, group, study, status)
        return
    rows = _rows(runs_dir, group, study, status)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        note(f"no runs in {runs_dir}", style="")
        return
    wide_console().print(_table(rows))


def _rows(runs_dir: Path, group: str | None, study: str | None, statuses: list[str] | None,
          skipped: list[str] | None = None) -> list[dict[str, Any]]:
    from gptexp.report import filter_runs, runs_rows
    from gptexp.tracking import list_runs

    on_skip = None if skipped is None else (lambda run_dir, reason: skipped.append(f"{run_dir.name}: {reason}"))
    records = list_runs(runs_dir) if skipped is None else list_runs(runs_dir, on_skip=on_skip)
    return runs_rows(filter_runs(records, group=group, study=study, statuses=statuses))


def _table(rows: list[dict[str, Any]], caption: str | None = None):  # -> rich.table.Table
    from gptexp.report import runs_table

    from rich.text import Text

    table = runs_table(rows)
    if caption:  # paths and skip reasons are text, never markup
        table.caption, table.caption_justify = Text(caption, style="dim"), "left"
    return table


def _watch(runs_dir: Path, interval: float, group: str | None, study: str | None, statuses: list[str] | None) -> None:
    """Redraw until Ctrl-C; a terminal gets the table replaced in place (rich Live)."""
    from rich.live import Live

    def frame():  # -> rich.table.Table
        skipped: list[str] = []
        rows = _rows(runs_dir, group, study, statuses, skipped)
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        caption = f"{len(rows)} run(s) in {runs_dir} at {stamp}; every {interval:g} s; Ctrl-C stops"
        if skipped:
            caption += "\nskipped: " + "; ".join(skipped)
        return _table(rows, caption)

    try:
        if stdout.is_terminal:
            with Live(frame(), console=stdout, auto_refresh=False, transient=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(frame(), refresh=True)
        else:
            console = wide_console()
            while True:
                console.print(frame())
                console.file.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        return  # Ctrl-C is how a watch ends: exit 0
