"""Reports on a terminal: the `gptexp runs` table (rich), values printed as text, never as markup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from gptexp import contract as C
from gptexp.report.compare import show
from gptexp.report.values import RUNS_COLUMNS, fmt_count, fmt_duration, fmt_metric, fmt_rate, text

_STATUS_STYLE = {"completed": "green", "running": "cyan", "crashed": "bold red", "failed": "red",
                 "pruned": "yellow", "interrupted": "magenta"}
_SHORT_HEADERS = {"parameters": "params", "objective": "obj", "tokenizer": "tok", "tokens/s": "tok/s", "wall time": "wall"}
# Numbers are never cut short: narrow terminals squeeze the name column instead.
_MIN_WIDTHS = {"tokenizer": 4, "objective": 4, "parameters": 6, "steps": 5, C.VAL_BPB: 7, C.VAL_ACC: 7, "tokens/s": 7, "wall time": 5}


def runs_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """The rows of runs_rows as a rich Table (numbers formatted, status coloured)."""
    # A light box and short headers keep the eleven columns readable in a 110-column terminal.
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in RUNS_COLUMNS:
        numeric = column in ("parameters", "steps", C.VAL_BPB, C.VAL_ACC, "tokens/s", "wall time")
        table.add_column(_SHORT_HEADERS.get(column, column), justify="right" if numeric else "left",
                         no_wrap=numeric or column in ("id", "status"), min_width=_MIN_WIDTHS.get(column))
    for row in rows:
        status = str(row.get("status", ""))
        table.add_row(  # Text, not markup: a run name like "[b]x" must print as written
            Text(str(row.get("id", ""))), Text(str(row.get("name", ""))),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            Text(text(row.get("tokenizer"))), Text(text(row.get("objective"))),
            fmt_count(row.get("parameters")), text(row.get("steps")),
            fmt_metric(row.get(C.VAL_BPB)), fmt_metric(row.get(C.VAL_ACC)),
            fmt_rate(row.get("tokens/s")), fmt_duration(row.get("wall time")),
        )
    return table



_DIFF_FORMATS = {C.VAL_BPB: fmt_metric, C.SUMMARY_BEST_BPB: fmt_metric, C.VAL_LOSS: fmt_metric, C.VAL_ACC: fmt_metric,
                 C.SUMMARY_WALL_TIME: fmt_duration}
_DIFF_LABELS = {C.VAL_BPB: f"final {C.VAL_BPB}", C.SUMMARY_BEST_BPB: "best val/bpb", C.SUMMARY_BEST_STEP: "best at step",
                C.VAL_LOSS: f"final {C.VAL_LOSS}", C.VAL_ACC: f"final {C.VAL_ACC}", C.SUMMARY_WALL_TIME: "wall time"}


def diff_table(diff: dict[str, Any]) -> Table:
    """`gptexp diff`: one row per differing spec field, then the metrics; one column per run."""
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("field")
    for run_id in diff["runs"]:
        table.add_column(Text(run_id), justify="right", overflow="fold")
    if not diff["fields"]:
        table.add_row(Text("(the specs are identical)", style="dim"), *["" for _ in diff["runs"]])
    for path, values in diff["fields"].items():
        table.add_row(Text(path), *[Text(show(v)) for v in values])
    table.add_section()
    for key, values in diff["metrics"].items():
        fmt = _DIFF_FORMATS.get(key, text)
        cells = [Text(fmt(v), style=_STATUS_STYLE.get(str(v), "") if key == "status" else "") for v in values]
        table.add_row(Text(_DIFF_LABELS.get(key, key), style="bold" if key == C.VAL_BPB else ""), *cells)
    return table
