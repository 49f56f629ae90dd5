"""The values a report shows, read from the run store: final values of a run, filters, rows, formats.

Reads only what the trainer wrote (tracking.list_runs / load_run); never writes into a run.

    rows = runs_rows(filter_runs(list_runs(Path("runs")), group="mlm_bpe_vs_char"))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from gptexp import contract as C
from gptexp.tracking import RunRecord

# The columns of `gptexp runs` (and its --json rows). Numbers are raw; `wall time` is in seconds.
RUNS_COLUMNS = ("id", "name", "status", "tokenizer", "objective", "parameters", "steps",
                C.VAL_BPB, C.VAL_ACC, "tokens/s", "wall time")
# The summary table of a report, leading with the metric that answers the question.
SUMMARY_COLUMNS = ("id", "name", C.VAL_BPB, C.VAL_LOSS, C.VAL_ACC, "tokenizer", "objective",
                   "parameters", "steps", "bytes seen", "status")
CURVE_METRICS = (C.VAL_BPB, C.TRAIN_LOSS)
CURVE_AXES = ((C.STEP, "step"), (C.BYTES_SEEN, "bytes of text seen"))
# Values a run reports at its end: summary.json key -> where the metrics rows keep it.
_FINAL_KEYS = (C.VAL_BPB, C.VAL_LOSS, C.VAL_ACC, C.TRAIN_LOSS, C.SUMMARY_STEPS, C.TOKENS_SEEN,
               C.BYTES_SEEN, C.TOKENS_PER_SEC, C.SUMMARY_WALL_TIME, C.SUMMARY_PARAMETERS)


def final_values(record: RunRecord, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run's end values: from summary.json, each missing one from the last metrics rows.

    A run without a summary (running, crashed) gets its last eval row's val/*, its last train row's
    train/loss and tokens_per_sec, its largest step, and (last time - first time) as wall time.
    `parameters` exists only in the summary.
    """
    values = {key: record.summary.get(key) for key in _FINAL_KEYS}
    if all(values[key] is not None for key in _FINAL_KEYS if key != C.SUMMARY_PARAMETERS):
        return values
    rows = record.metrics() if metrics is None else metrics
    fallback: dict[str, Any] = {}
    for row in rows:  # later rows win
        if C.VAL_BPB in row:
            for key in C.VAL_METRICS:
                fallback[key] = row.get(key)
        if C.TRAIN_LOSS in row:
            fallback[C.TRAIN_LOSS] = row[C.TRAIN_LOSS]
            fallback[C.TOKENS_PER_SEC] = row.get(C.TOKENS_PER_SEC)
        for key in (C.TOKENS_SEEN, C.BYTES_SEEN):
            if row.get(key) is not None:
                fallback[key] = row[key]
    steps = [row[C.STEP] for row in rows if isinstance(row.get(C.STEP), (int, float))]
    fallback[C.SUMMARY_STEPS] = int(max(steps)) if steps else record.status_info.get("step")
    times = [row[C.TIME] for row in rows if isinstance(row.get(C.TIME), (int, float))]
    fallback[C.SUMMARY_WALL_TIME] = max(times) - min(times) if len(times) >= 2 else None
    for key, value in values.items():
        if value is None:
            values[key] = fallback.get(key)
    return values


def finite(value: Any) -> float | None:
    """`value` as a float if it is a finite number, else None (missing, NaN, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def group_key(value: Any) -> str:
    """How a spec value names its group: `None -> '(unset)'`, `4 -> '4'`, `'bpe' -> 'bpe'`."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)



def best_values(record: RunRecord, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The lowest val/bpb a run reached and its step: summary.json's `best/val/bpb` and `best/step`,
    else the lowest finite val/bpb among the metrics rows (a running or crashed run)."""
    if record.summary.get(C.SUMMARY_BEST_BPB) is not None:
        return {C.SUMMARY_BEST_BPB: record.summary[C.SUMMARY_BEST_BPB],
                C.SUMMARY_BEST_STEP: record.summary.get(C.SUMMARY_BEST_STEP)}
    rows = record.metrics() if metrics is None else metrics
    evals = [(finite(row.get(C.VAL_BPB)), row.get(C.STEP)) for row in rows]
    evals = [(bpb, step) for bpb, step in evals if bpb is not None]
    if not evals:
        return {C.SUMMARY_BEST_BPB: None, C.SUMMARY_BEST_STEP: None}
    bpb, step = min(evals, key=lambda pair: pair[0])
    return {C.SUMMARY_BEST_BPB: bpb, C.SUMMARY_BEST_STEP: step}


def filter_runs(records: Iterable[RunRecord], group: str | None = None, study: str | None = None,
                statuses: Iterable[str] | None = None) -> list[RunRecord]:
    """Runs in W&B group `group`, of sweep `study`, with an effective status in `statuses`.

    A run's group is summary["group"] or else its spec's tracking.wandb.group; it belongs to a
    study when summary["study"] names it or its W&B tags hold `study:<name>`.
    """
    wanted = set(statuses) if statuses is not None else None
    selected = []
    for record in records:
        if group is not None and _run_group(record) != group:
            continue
        if study is not None and _run_study(record) != study:
            continue
        if wanted is not None and record.status not in wanted:
            continue
        selected.append(record)
    return selected


def _run_group(record: RunRecord) -> str | None:
    return record.summary.get("group") or record.field("tracking.wandb.group")


def _run_study(record: RunRecord) -> str | None:
    if record.summary.get("study"):
        return str(record.summary["study"])
    for tag in record.field("tracking.wandb.tags") or []:
        if isinstance(tag, str) and tag.startswith("study:"):
            return tag.removeprefix("study:")
    return None


def runs_rows(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """One dict per run with the RUNS_COLUMNS keys: the --json form.

    Numbers are raw (`wall time` in seconds); unknown or non-finite ones are None, so
    `json.dumps(rows, allow_nan=False)` is valid JSON even for a run whose loss went NaN.
    """
    rows = []
    for record in records:
        values = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in final_values(record).items()}
        rows.append({
            "id": record.run_id,
            "name": record.name,
            "status": record.status,
            "tokenizer": record.field("tokenizer.kind"),
            "objective": record.field("objective.kind"),
            "parameters": values[C.SUMMARY_PARAMETERS],
            "steps": values[C.SUMMARY_STEPS],
            C.VAL_BPB: values[C.VAL_BPB],
            C.VAL_ACC: values[C.VAL_ACC],
            "tokens/s": values[C.TOKENS_PER_SEC],
            "wall time": values[C.SUMMARY_WALL_TIME],
        })
    return rows



# number formats (shared by the terminal, HTML and Markdown tables)


def text(value: Any) -> str:
    return "—" if value is None else str(value)


def fmt_metric(value: Any) -> str:
    """`1.93 -> '1.9300'`, `None -> '—'`, `nan -> 'nan'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    return f"{value:.4f}"


def fmt_count(value: Any) -> str:
    """`812288 -> '812.3k'`, `1234567 -> '1.23M'`, `950 -> '950'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    for limit, suffix, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(value) >= limit:
            return f"{value / limit:.{digits}f}{suffix}"
    return f"{value:g}"


def fmt_bytes(value: Any) -> str:
    """`24576000 -> '24.6 MB'` (SI units, like the plots' axis)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text(value)
    for limit, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= limit:
            return f"{value / limit:.1f} {unit}"
    return f"{value:g} B"


def fmt_rate(value: Any) -> str:
    """`12345.6 -> '12,346'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return text(value)
    return f"{value:,.0f}"


def fmt_duration(seconds: Any) -> str:
    """`42.3 -> '42s'`, `185 -> '3m05s'`, `3725 -> '1h02m'`."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return text(seconds)
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"

