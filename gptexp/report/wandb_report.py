"""The W&B Report: the same panels as the HTML report, built offline; `publish_wandb_report` sends it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gptexp import contract as C
from gptexp.report.compare import describe, group_stats
from gptexp.report.page import (GROUP_HEADERS, QUESTION_DETAIL, SUMMARY_COLUMNS,
                                group_cells, markdown_table, md, sorted_for_table, summary_cells)
from gptexp.report.values import CURVE_AXES, CURVE_METRICS, final_values
from gptexp.tracking import RunRecord

if TYPE_CHECKING:  # slow to import
    from wandb_workspaces.reports.v2 import Report



def build_wandb_report(records: Sequence[RunRecord], entity: str, project: str, by: str | None = None,
                       title: str | None = None, group: str | None = None,
                       ignore: Sequence[str] = ()) -> Report:
    """The same panels as the HTML report, as a W&B Report over these runs (W&B run id == run id).

    The run set selects the runs by id, or the whole W&B group `group` when given (a study's
    group is its name). Entity and project are set on the Report only: a Runset that names them
    looks its project up over the network when converted (FIELD-NOTES), so this builds offline.
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    records = list(records)
    derived_title, lead = describe(records, by=by, ignore=ignore)
    title = title or derived_title
    if group is not None:
        filters = expr.And(expr.Metric("Group") == group)
        runset_name = f"group {group}"
    elif records:
        filters = expr.And(expr.Metric("ID").isin([r.run_id for r in records]))
        runset_name = f"{len(records)} run(s)"
    else:
        raise ValueError("a W&B report needs runs or a group")
    runset = wr.Runset(name=runset_name[:64], filters=filters)

    curves = [wr.LinePlot(title=f"{y} vs {label}", x="Step" if x == C.STEP else x, y=[y],
                          title_x=label, title_y=y)
              for y in CURVE_METRICS for x, label in CURVE_AXES]
    if by:
        comparison = [
            wr.BarPlot(title=f"final val/bpb by {by} (mean ± std)", metrics=[C.VAL_BPB],
                       orientation="v", groupby=wr.Config(by), groupby_aggfunc="mean",
                       groupby_rangefunc="stddev"),
            wr.ScalarChart(title="mean final val/bpb", metric=wr.SummaryMetric(C.VAL_BPB),
                           groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]
    else:
        comparison = [
            wr.BarPlot(title="final val/bpb per run", metrics=[C.VAL_BPB], orientation="v"),
            wr.ScalarChart(title="mean final val/bpb", metric=wr.SummaryMetric(C.VAL_BPB),
                           groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]
    values = {r.run_id: final_values(r) for r in records}
    numbers = "\n".join(markdown_table(SUMMARY_COLUMNS, [
        [summary_cells(r, values[r.run_id])[c] for c in SUMMARY_COLUMNS]
        for r in sorted_for_table(records, values)]))
    if by:
        numbers += f"\n\n**Grouped by {md(by)}** (completed runs; sample std)\n\n" + "\n".join(
            markdown_table(GROUP_HEADERS, [list(group_cells(s).values()) for s in group_stats(records, by, ignore=ignore)]))
    blocks = [
        wr.MarkdownBlock(text=f"**{md(lead)}**\n\n{md(QUESTION_DETAIL)}"),
        wr.H2(text="Curves"),
        wr.PanelGrid(runsets=[runset], panels=curves),
        wr.H2(text="Comparison"),
        wr.PanelGrid(runsets=[runset], panels=comparison),
        wr.H2(text="Numbers (from the local run store)"),
        wr.MarkdownBlock(text=numbers),
    ]
    return wr.Report(entity=entity, project=project, title=title[:128], description=lead,
                     blocks=blocks)


def publish_wandb_report(report: Report) -> str:
    """Save the report to W&B (needs a login and the network) and return its URL."""
    report.save()
    return report.url
