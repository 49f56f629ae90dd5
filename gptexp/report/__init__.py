"""Comparison tables and reports from the run store: `gptexp runs`, `gptexp report`, `gptexp diff`.

One module per output, each with one job:
  values       what a run's files say: final values, filters, `gptexp runs` rows, number formats
  compare      which runs may be compared: spec fields that differ, groups that differ in the seed alone
  terminal     rich tables for the terminal (values printed as text, never as markup)
  plots        matplotlib figures as PNGs (curves, grouped bars, Optuna's study plots)
  page         the self-contained HTML page and its Markdown twin
  wandb_report the same panels as a W&B Report

    rows = runs_rows(filter_runs(list_runs(Path("runs")), group="mlm_bpe_vs_char"))
    print(runs_table(rows))                                   # or json.dumps(rows)
    build_report(records, Path("report.html"), by="tokenizer.kind", study=study)
    build_wandb_report(records, entity="me", project="gptexp", by="tokenizer.kind")

Heavy imports (matplotlib, optuna, wandb_workspaces) happen inside the functions that need them,
so `gptexp runs` pays for none of them.
"""

from gptexp.report.compare import GroupStat, UnknownFieldError, check_field, describe, differing_fields, group_stats
from gptexp.report.page import CONTENT_SECURITY_POLICY, SUMMARY_COLUMNS, ReportPaths, build_report
from gptexp.report.plots import Plot, curve_figure, curve_plot, group_plot, study_plots
from gptexp.report.terminal import runs_table
from gptexp.report.values import (RUNS_COLUMNS, filter_runs, final_values, fmt_bytes, fmt_count, fmt_duration,
                                  fmt_metric, fmt_rate, runs_rows)
from gptexp.report.wandb_report import build_wandb_report, publish_wandb_report

__all__ = [
    "CONTENT_SECURITY_POLICY", "RUNS_COLUMNS", "SUMMARY_COLUMNS", "GroupStat", "Plot", "UnknownFieldError",
    "check_field", "describe", "differing_fields",
    "ReportPaths", "build_report", "build_wandb_report", "curve_figure", "curve_plot", "filter_runs",
    "final_values", "fmt_bytes", "fmt_count", "fmt_duration", "fmt_metric", "fmt_rate", "group_plot",
    "group_stats", "publish_wandb_report", "runs_rows", "runs_table", "study_plots",
]
