"""Comparison tables and reports from the run store: `gptexp runs` and `gptexp report`.

Reads only what the trainer wrote (tracking.list_runs / load_run); never writes into a run.

    rows = runs_rows(filter_runs(list_runs(Path("runs")), group="mlm_bpe_vs_char"))
    print(runs_table(rows))                                   # or json.dumps(rows)
    build_report(records, Path("report.html"), by="tokenizer.kind", study=study)
    build_wandb_report(records, entity="me", project="gptexp", by="tokenizer.kind")

The HTML report is one self-contained file: plots are base64 PNGs, styles are inline, and its
Content-Security-Policy forbids scripts and every network load. Its Markdown twin (same stem,
`.md`) links the same PNGs, written into `<stem>_files/`.

Heavy imports (matplotlib, optuna, wandb_workspaces) happen inside the functions that need them,
so `gptexp runs` pays for none of them.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from gptexp.tracking import RunRecord

if TYPE_CHECKING:  # imported for annotations only; both are slow to import
    import optuna
    from wandb_workspaces.reports.v2 import Report

QUESTION = "Does a BPE tokenizer beat a character tokenizer? Compared on bits per byte (val/bpb)."
QUESTION_DETAIL = (
    "val/bpb is the summed cross-entropy of the predicted tokens divided by ln 2 times the UTF-8 "
    "bytes those tokens stand for. Unlike loss or accuracy per token it does not depend on how the "
    "text was cut into tokens, so it is the one metric comparable across tokenizers; lower is better. "
    "Curves are also drawn against bytes of text seen, the fair x-axis when tokens differ in length."
)
DEFAULT_TITLE = "gptexp report: BPE vs char on bits per byte"
# No scripts, no fetches: the report can only show its own inline styles and data: images.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# The columns of `gptexp runs` (and its --json rows). Numbers are raw; `wall time` is in seconds.
RUNS_COLUMNS = ("id", "name", "status", "tokenizer", "objective", "parameters", "steps",
                "val/bpb", "val/acc", "tokens/s", "wall time")
# The summary table of a report, leading with the metric that answers the question.
SUMMARY_COLUMNS = ("id", "name", "val/bpb", "val/loss", "val/acc", "tokenizer", "objective",
                   "parameters", "steps", "bytes seen", "status")
CURVE_METRICS = ("val/bpb", "train/loss")
CURVE_AXES = (("step", "step"), ("bytes_seen", "bytes of text seen"))
# Values a run reports at its end: summary.json key -> where the metrics rows keep it.
_FINAL_KEYS = ("val/bpb", "val/loss", "val/acc", "train/loss", "steps", "tokens_seen",
               "bytes_seen", "tokens_per_sec", "wall_time_s", "parameters")
_STATUS_STYLE = {"completed": "green", "running": "cyan", "crashed": "bold red", "failed": "red",
                 "pruned": "yellow", "interrupted": "magenta"}


# ---------------------------------------------------------------------------------------------
# values of one run


def final_values(record: RunRecord, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run's end values: from summary.json, each missing one from the last metrics rows.

    A run without a summary (running, crashed) gets its last eval row's val/*, its last train row's
    train/loss and tokens_per_sec, its largest step, and (last time - first time) as wall time.
    `parameters` exists only in the summary.
    """
    values = {key: record.summary.get(key) for key in _FINAL_KEYS}
    if all(values[key] is not None for key in _FINAL_KEYS if key != "parameters"):
        return values
    rows = record.metrics() if metrics is None else metrics
    fallback: dict[str, Any] = {}
    for row in rows:  # later rows win
        if "val/bpb" in row:
            for key in ("val/bpb", "val/loss", "val/acc"):
                fallback[key] = row.get(key)
        if "train/loss" in row:
            fallback["train/loss"] = row["train/loss"]
            fallback["tokens_per_sec"] = row.get("tokens_per_sec")
        for key in ("tokens_seen", "bytes_seen"):
            if row.get(key) is not None:
                fallback[key] = row[key]
    steps = [row["step"] for row in rows if isinstance(row.get("step"), (int, float))]
    fallback["steps"] = int(max(steps)) if steps else record.status_info.get("step")
    times = [row["time"] for row in rows if isinstance(row.get("time"), (int, float))]
    fallback["wall_time_s"] = max(times) - min(times) if len(times) >= 2 else None
    for key, value in values.items():
        if value is None:
            values[key] = fallback.get(key)
    return values


def _finite(value: Any) -> float | None:
    """`value` as a float if it is a finite number, else None (missing, NaN, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _group_key(value: Any) -> str:
    """How a spec value names its group: `None -> '(unset)'`, `4 -> '4'`, `'bpe' -> 'bpe'`."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ---------------------------------------------------------------------------------------------
# gptexp runs


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
            "parameters": values["parameters"],
            "steps": values["steps"],
            "val/bpb": values["val/bpb"],
            "val/acc": values["val/acc"],
            "tokens/s": values["tokens_per_sec"],
            "wall time": values["wall_time_s"],
        })
    return rows


_SHORT_HEADERS = {"parameters": "params", "objective": "obj", "tokenizer": "tok", "tokens/s": "tok/s", "wall time": "wall"}
# Numbers are never cut short: narrow terminals squeeze the name column instead.
_MIN_WIDTHS = {"tokenizer": 4, "objective": 4, "parameters": 6, "steps": 5, "val/bpb": 7, "val/acc": 7, "tokens/s": 7, "wall time": 5}


def runs_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """The rows of runs_rows as a rich Table (numbers formatted, status coloured)."""
    # A light box and short headers keep the eleven columns readable in a 110-column terminal.
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in RUNS_COLUMNS:
        numeric = column in ("parameters", "steps", "val/bpb", "val/acc", "tokens/s", "wall time")
        table.add_column(_SHORT_HEADERS.get(column, column), justify="right" if numeric else "left",
                         no_wrap=numeric or column in ("id", "status"), min_width=_MIN_WIDTHS.get(column))
    for row in rows:
        status = str(row.get("status", ""))
        table.add_row(  # Text, not markup: a run name like "[b]x" must print as written
            Text(str(row.get("id", ""))), Text(str(row.get("name", ""))),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            Text(_text(row.get("tokenizer"))), Text(_text(row.get("objective"))),
            fmt_count(row.get("parameters")), _text(row.get("steps")),
            fmt_metric(row.get("val/bpb")), fmt_metric(row.get("val/acc")),
            fmt_rate(row.get("tokens/s")), fmt_duration(row.get("wall time")),
        )
    return table


# ---------------------------------------------------------------------------------------------
# number formats (shared by the terminal, HTML and Markdown tables)


def _text(value: Any) -> str:
    return "—" if value is None else str(value)


def fmt_metric(value: Any) -> str:
    """`1.93 -> '1.9300'`, `None -> '—'`, `nan -> 'nan'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    return f"{value:.4f}"


def fmt_count(value: Any) -> str:
    """`812288 -> '812.3k'`, `1234567 -> '1.23M'`, `950 -> '950'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    for limit, suffix, digits in ((1e9, "G", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(value) >= limit:
            return f"{value / limit:.{digits}f}{suffix}"
    return f"{value:g}"


def fmt_bytes(value: Any) -> str:
    """`24576000 -> '24.6 MB'` (SI units, like the plots' axis)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _text(value)
    for limit, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= limit:
            return f"{value / limit:.1f} {unit}"
    return f"{value:g} B"


def fmt_rate(value: Any) -> str:
    """`12345.6 -> '12,346'`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return _text(value)
    return f"{value:,.0f}"


def fmt_duration(seconds: Any) -> str:
    """`42.3 -> '42s'`, `185 -> '3m05s'`, `3725 -> '1h02m'`."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return _text(seconds)
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# ---------------------------------------------------------------------------------------------
# grouped comparison


@dataclass
class GroupStat:
    """Final `metric` of the completed runs sharing one value of a spec field."""

    value: str
    run_ids: list[str]  # completed runs with a finite final metric: the ones counted
    values: list[float]
    excluded: list[str]  # runs of the group left out (not completed, or no final metric)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1) over runs/seeds; None below two runs."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


def group_stats(records: Iterable[RunRecord], by: str, metric: str = "val/bpb") -> list[GroupStat]:
    """Group runs by spec field `by` (dotted path); mean ± std of final `metric` per group.

    Only completed runs count: the last value of a crashed or pruned run is not a final value.
    Groups are sorted by value, numerically when every value is a number.
    """
    groups: dict[str, GroupStat] = {}
    for record in records:
        key = _group_key(record.field(by))
        stat = groups.setdefault(key, GroupStat(key, [], [], []))
        value = _finite(final_values(record)[metric]) if record.status == "completed" else None
        if value is None:
            stat.excluded.append(record.run_id)
        else:
            stat.run_ids.append(record.run_id)
            stat.values.append(value)
    keys = list(groups)
    try:
        keys.sort(key=float)
    except ValueError:
        keys.sort()
    return [groups[key] for key in keys]


# ---------------------------------------------------------------------------------------------
# plots (matplotlib Figure objects directly: no pyplot state, no GUI backend)


@dataclass
class Plot:
    name: str  # file stem, also the HTML anchor
    title: str
    png: bytes


def _new_figure(width: float = 6.4, height: float = 3.9):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _file_stem(text: str) -> str:
    """A safe file name for a plot: `'val/bpb_by_tokenizer.kind' -> 'val_bpb_by_tokenizer_kind'`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:80] or "plot"


def _plain(text: str) -> str:
    """Text for matplotlib that never turns into mathtext: `'a $x$' -> 'a \\$x\\$'`."""
    return str(text).replace("$", r"\$")


def _series(rows: list[dict[str, Any]], x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    points = sorted(
        (x, y) for x, y in ((_finite(r.get(x_key)), _finite(r.get(y_key))) for r in rows)
        if x is not None and y is not None
    )
    return [x for x, _ in points], [y for _, y in points]


def _run_colours(records: list[RunRecord], by: str | None) -> dict[str, Any]:
    """One colour per run, or one per group value when comparing `by`, so seeds form a bundle."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(records) <= 10 else "tab20"].colors
    if by is None:
        return {r.run_id: palette[i % len(palette)] for i, r in enumerate(records)}
    keys = sorted({_group_key(r.field(by)) for r in records})
    return {r.run_id: palette[keys.index(_group_key(r.field(by))) % len(palette)] for r in records}


def curve_figure(records: list[RunRecord], metrics: dict[str, list[dict[str, Any]]], y_key: str,
                 x_key: str, x_label: str, by: str | None = None):
    """`y_key` against `x_key` for every run that logged both; unfinished runs dashed, ending in
    an x. Line labels are `<run id>` (`<group>: <run id>` with `by`) plus ` (<status>)` if unfinished."""
    from matplotlib.ticker import EngFormatter

    fig = _new_figure()
    ax = fig.add_subplot()
    colours = _run_colours(records, by)
    drawn = 0
    for record in records:
        xs, ys = _series(metrics[record.run_id], x_key, y_key)
        if not xs:
            continue
        label = record.run_id if by is None else f"{_group_key(record.field(by))}: {record.run_id}"
        finished = record.status == "completed"
        if not finished:
            label += f" ({record.status})"
        ax.plot(xs, ys, color=colours[record.run_id], linestyle="-" if finished else "--",
                linewidth=1.4, label=_plain(label))
        if not finished:
            ax.plot(xs[-1:], ys[-1:], marker="x", color=colours[record.run_id], markersize=8)
        drawn += 1
    if x_key == "bytes_seen":
        ax.xaxis.set_major_formatter(EngFormatter(unit="B"))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_key)
    ax.set_title(f"{y_key} vs {x_label}")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize="x-small", loc="upper right")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return fig


def curve_plot(records: list[RunRecord], metrics: dict[str, list[dict[str, Any]]], y_key: str,
               x_key: str, x_label: str, by: str | None = None) -> Plot:
    fig = curve_figure(records, metrics, y_key, x_key, x_label, by)
    return Plot(_file_stem(f"{y_key}_vs_{x_key}"), f"{y_key} vs {x_label}", _png(fig))


def group_plot(stats: list[GroupStat], by: str, metric: str = "val/bpb") -> Plot:
    """Bars of the group means with ± std error bars, each run's value drawn as a dot."""
    fig = _new_figure(width=max(4.5, 1.3 * len(stats) + 2.5))
    ax = fig.add_subplot()
    positions = range(len(stats))
    means = [s.mean if s.mean is not None else 0.0 for s in stats]
    errors = [s.std or 0.0 for s in stats]
    bars = ax.bar(positions, means, yerr=errors, capsize=8, color="#8fb3d9", edgecolor="#2f5d8a")
    for position, stat, bar in zip(positions, stats, bars):
        ax.plot([position] * stat.n, stat.values, "o", color="#1b2f45", markersize=4, zorder=3)
        if stat.mean is not None:
            std = "" if stat.std is None else f" ± {stat.std:.4f}"
            ax.annotate(f"{stat.mean:.4f}{std}\nn={stat.n}", (position, bar.get_height()),
                        xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize="small")
    ax.set_xticks(list(positions), [_plain(s.value) for s in stats])
    ax.set_xlabel(_plain(by))
    ax.set_ylabel(f"final {metric} (lower is better)")
    top = max((m + e for m, e in zip(means, errors)), default=1.0)
    ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    title = f"final {metric} by {by}: mean ± std over completed runs"
    ax.set_title(_plain(title), fontsize="medium")
    ax.grid(True, axis="y", alpha=0.3)
    return Plot(_file_stem(f"{metric}_by_{by}"), title, _png(fig))


def study_plots(study: optuna.Study) -> tuple[list[Plot], list[str]]:
    """Optuna's own matplotlib plots of a study, and a note for each one that cannot be drawn."""
    import warnings

    import optuna
    from matplotlib import pyplot
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    target = None
    if len(study.directions) > 1:  # Optuna's plots need one target: use the first objective
        target = lambda trial: trial.values[0]  # noqa: E731
    varying = [name for name in {p for t in complete for p in t.params}
               if len({repr(t.params.get(name)) for t in complete}) > 1]
    plots, notes = [], []
    wanted = [
        ("optimization_history", "optimization history", optuna_plots.plot_optimization_history,
         "no completed trials yet" if not complete else None),
        ("param_importances", "parameter importances", optuna_plots.plot_param_importances,
         f"needs at least 2 completed trials with varying parameters ({len(complete)} completed, "
         f"{len(varying)} parameter(s) varying)" if len(complete) < 2 or not varying else None),
        ("parallel_coordinate", "parallel coordinates", optuna_plots.plot_parallel_coordinate,
         "no completed trials yet" if not complete else None),
    ]
    open_before = set(pyplot.get_fignums())
    try:
        for name, title, plot, reason in wanted:
            if reason is not None:
                notes.append(f"{title}: not drawn, {reason}.")
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    axes = plot(study, target=target) if target else plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError) as error:
                notes.append(f"{title}: not drawn, {type(error).__name__}: {error}")
                continue
            # Optuna draws equal bars, with a warning, when it cannot tell the parameters apart.
            equal = [str(w.message) for w in caught if "will be equal" in str(w.message)]
            if equal:
                notes.append(f"{title}: not drawn, Optuna says: {equal[0]}")
                continue
            fig = _first_axes(axes).get_figure()
            fig.set_size_inches(6.4, 3.9)
            fig.tight_layout()
            plots.append(Plot(f"study_{name}", title, _png(fig)))
    finally:  # Optuna draws through pyplot: close its figures, and only its figures
        for number in set(pyplot.get_fignums()) - open_before:
            pyplot.close(number)
    return plots, notes


def _first_axes(axes: Any):
    """Optuna returns an Axes, or an array of them for some multi-parameter plots."""
    return axes.flat[0] if hasattr(axes, "flat") else axes


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    files_dir: Path  # the PNGs the Markdown links to
    plots: list[str] = field(default_factory=list)  # plot names, in page order
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def build_report(records: Sequence[RunRecord], out: Path, by: str | None = None,
                 study: optuna.Study | None = None, title: str = DEFAULT_TITLE) -> ReportPaths:
    """Write the HTML report `out` and its Markdown twin `out.with_suffix('.md')`.

    Every run appears in the table with its status; unfinished runs' partial curves are drawn.
    `by` (a dotted spec field such as `tokenizer.kind`) adds the grouped comparison; `study` adds
    Optuna's history, importance and parallel-coordinate plots (or a note saying why not).
    """
    out = Path(out)
    metrics = {r.run_id: r.metrics() for r in records}
    values = {r.run_id: final_values(r, metrics[r.run_id]) for r in records}
    records = _sorted_for_table(list(records), values)

    plots = [curve_plot(records, metrics, y_key, x_key, x_label, by)
             for y_key in CURVE_METRICS for x_key, x_label in CURVE_AXES]
    notes: list[str] = []
    stats = group_stats(records, by) if by else []
    group_figure = group_plot(stats, by) if by else None
    if by and all(r.field(by) is None for r in records):
        notes.append(f"no run's spec has the field {by!r}: every run falls in '(unset)'.")
    study_figures, study_notes = study_plots(study) if study is not None else ([], [])
    notes += study_notes
    all_plots = plots + ([group_figure] if group_figure else []) + study_figures

    out.parent.mkdir(parents=True, exist_ok=True)
    files_dir = out.parent / f"{out.stem}_files"
    files_dir.mkdir(exist_ok=True)
    for plot in all_plots:
        (files_dir / f"{plot.name}.png").write_bytes(plot.png)

    page = _Page(title, records, values, plots, by, stats, group_figure, study, study_figures,
                 study_notes, notes)
    out.write_text(page.html(), encoding="utf-8")
    markdown = out.with_suffix(".md")
    markdown.write_text(page.markdown(files_dir.name), encoding="utf-8")
    return ReportPaths(out, markdown, files_dir, [p.name for p in all_plots], notes)


def _sorted_for_table(records: list[RunRecord], values: dict[str, dict[str, Any]]) -> list[RunRecord]:
    """Completed runs first, best val/bpb first; then the rest, in the order given."""
    def key(item: tuple[int, RunRecord]) -> tuple[int, float, int]:
        index, record = item
        bpb = _finite(values[record.run_id]["val/bpb"]) if record.status == "completed" else None
        return (0 if bpb is not None else 1, bpb if bpb is not None else 0.0, index)

    return [record for _, record in sorted(enumerate(records), key=key)]


def _e(value: Any) -> str:
    """HTML-escape any user string (names, errors, spec values), quotes included."""
    return html.escape(str(value), quote=True)


def _md(value: Any) -> str:
    """A user string safe in a Markdown table cell: no inline HTML, links, emphasis or pipes."""
    text = " ".join(str(value).split())
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return html.escape(text, quote=False)


def _summary_cells(record: RunRecord, values: dict[str, Any]) -> dict[str, str]:
    return {
        "id": record.run_id,
        "name": record.name,
        "val/bpb": fmt_metric(values["val/bpb"]),
        "val/loss": fmt_metric(values["val/loss"]),
        "val/acc": fmt_metric(values["val/acc"]),
        "tokenizer": _tokenizer_text(record),
        "objective": _text(record.field("objective.kind")),
        "parameters": fmt_count(values["parameters"]),
        "steps": _text(values["steps"]),
        "bytes seen": fmt_bytes(values["bytes_seen"]),
        "status": record.status,
    }


def _tokenizer_text(record: RunRecord) -> str:
    """`char`, or `bpe (2048)` with the vocabulary size when the spec gives one."""
    kind, vocab = record.field("tokenizer.kind"), record.field("tokenizer.vocab_size")
    if kind is None:
        return "—"
    return f"{kind} ({vocab})" if kind == "bpe" and vocab else str(kind)


def _problems(records: list[RunRecord]) -> list[tuple[RunRecord, str]]:
    """What went wrong with each run that did not complete, for the list under the table."""
    problems = []
    for record in records:
        info = record.status_info
        where = f"at step {info.get('step')}" if info.get("step") is not None else ""
        if record.status == "crashed":
            text = f"crashed {where}: status says running but none of its processes is alive"
        elif record.status in ("failed", "interrupted", "pruned", "running"):
            text = f"{record.status} {where}"
        else:
            continue
        if info.get("error"):
            text += f" — {info['error']}"
        problems.append((record, " ".join(text.split())))
    return problems


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2733;
       max-width: 1320px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 32px; border-bottom: 1px solid #d5dde6; }
.question { font-size: 17px; font-weight: 600; color: #1f4e79; margin: 6px 0; }
.muted { color: #5b6b7b; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5dde6; padding: 4px 8px; text-align: left; }
th { background: #eef3f8; } td { white-space: nowrap; } td.num { text-align: right; }
td[data-col="name"], td[data-col="params"] { white-space: normal; overflow-wrap: anywhere; }
td.lead, th.lead { background: #fff6d6; font-weight: 600; }
.status-completed { color: #1a7f37; } .status-running { color: #0969da; }
.status-crashed, .status-failed { color: #cf222e; font-weight: 600; }
.status-pruned { color: #9a6700; } .status-interrupted { color: #8250df; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
figure.plot { margin: 0; } figure.plot img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 12px; color: #5b6b7b; }
.note { background: #fff8e1; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 6px 0; }
"""

_NUMERIC = {"val/bpb", "val/loss", "val/acc", "parameters", "steps", "bytes seen"}


@dataclass
class _Page:
    """Everything one report shows, rendered as HTML or as Markdown."""

    title: str
    records: list[RunRecord]
    values: dict[str, dict[str, Any]]
    curves: list[Plot]
    by: str | None
    stats: list[GroupStat]
    group_figure: Plot | None
    study: Any
    study_figures: list[Plot]
    study_notes: list[str]
    notes: list[str]

    def _status_counts(self) -> str:
        counts: dict[str, int] = {}
        for record in self.records:
            counts[record.status] = counts.get(record.status, 0) + 1
        parts = ", ".join(f"{n} {status}" for status, n in counts.items())
        return f"{len(self.records)} run(s)" + (f": {parts}" if parts else "")

    def _trials(self) -> list[dict[str, str]]:
        rows = []
        for trial in self.study.get_trials(deepcopy=False):
            value = trial.values[0] if trial.values else None
            params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in sorted(trial.params.items()))
            rows.append({"trial": str(trial.number), "state": trial.state.name.lower(),
                         "value": fmt_metric(value), "params": params,
                         "run": _text(trial.user_attrs.get("run_id"))})
        return rows

    # HTML ---------------------------------------------------------------------------------
    def html(self) -> str:
        generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        parts = [
            "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(self.title)}</h1>",
            f'<p class="question">{_e(QUESTION)}</p>',
            f'<p class="muted">{_e(QUESTION_DETAIL)}</p>',
            f'<p class="muted">{_e(self._status_counts())}. Generated {generated} by gptexp.</p>'
            "</header>",
            "<h2>Runs</h2>", self._html_summary(), self._html_problems(),
            "<h2>Curves</h2>",
            '<p class="muted">Dashed lines ending in × are runs that did not complete.</p>',
            self._html_figures(self.curves),
        ]
        if self.by:
            parts += [f"<h2>Grouped by {_e(self.by)}</h2>", self._html_groups()]
        if self.study is not None:
            parts += [f"<h2>Study {_e(self.study.study_name)}</h2>", self._html_trials(),
                      self._html_figures(self.study_figures)]
            parts += [f'<p class="note">{_e(note)}</p>' for note in self.study_notes]
        parts += [f'<p class="note">{_e(note)}</p>' for note in self.notes
                  if note not in self.study_notes]
        parts.append("</body></html>\n")
        return "\n".join(parts)

    def _html_summary(self) -> str:
        head = "".join(f'<th class="lead">{_e(c)}</th>' if c == "val/bpb" else f"<th>{_e(c)}</th>"
                       for c in SUMMARY_COLUMNS)
        body = []
        for record in self.records:
            cells = _summary_cells(record, self.values[record.run_id])
            tds = []
            for column in SUMMARY_COLUMNS:
                classes = ["num"] if column in _NUMERIC else []
                if column == "val/bpb":
                    classes.append("lead")
                if column == "status":
                    classes.append(f"status-{cells[column]}")
                tds.append(f'<td class="{" ".join(classes)}" data-col="{_e(column)}">'
                           f"{_e(cells[column])}</td>")
            body.append(f'<tr data-run-id="{_e(record.run_id)}">{"".join(tds)}</tr>')
        if not self.records:
            body.append(f'<tr><td colspan="{len(SUMMARY_COLUMNS)}">no runs</td></tr>')
        return (f'<table id="summary"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table>')

    def _html_problems(self) -> str:
        items = [f"<li><code>{_e(r.run_id)}</code> {_e(text)}</li>" for r, text in _problems(self.records)]
        return f'<ul id="problems">{"".join(items)}</ul>' if items else ""

    def _html_figures(self, plots: list[Plot]) -> str:
        figures = []
        for plot in plots:
            data = base64.b64encode(plot.png).decode("ascii")
            figures.append(
                f'<figure class="plot" id="plot-{_e(plot.name)}">'
                f'<img src="data:image/png;base64,{data}" alt="{_e(plot.title)}">'
                f"<figcaption>{_e(plot.title)}</figcaption></figure>")
        return f'<div class="plots">{"".join(figures)}</div>'

    def _html_groups(self) -> str:
        rows = []
        for stat in self.stats:
            cells = _group_cells(stat)
            rows.append(f'<tr data-group="{_e(stat.value)}">' + "".join(
                f'<td class="{"num" if k not in ("group", "runs", "excluded") else ""}" '
                f'data-col="{k}">{_e(v)}</td>' for k, v in cells.items()) + "</tr>")
        head = "".join(f"<th>{_e(h)}</th>" for h in _GROUP_HEADERS)
        table = f'<table id="groups"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        explain = ('<p class="muted">Mean and sample standard deviation (n − 1) of the final val/bpb '
                   "over completed runs (seeds); runs that did not complete are listed, not counted.</p>")
        figure = self._html_figures([self.group_figure]) if self.group_figure else ""
        return explain + figure + table

    def _html_trials(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("trial", "state", "value", "params", "run"))
        rows = "".join(
            f'<tr data-trial="{_e(t["trial"])}">' + "".join(
                f'<td data-col="{k}">{_e(v)}</td>' for k, v in t.items()) + "</tr>"
            for t in self._trials())
        direction = ", ".join(d.name.lower() for d in self.study.directions)
        return (f'<p class="muted">Objective: {_e(direction)} the trial value (val/bpb).</p>'
                f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')

    # Markdown -----------------------------------------------------------------------------
    def markdown(self, files: str) -> str:
        lines = [f"# {_md(self.title)}", "", f"**{_md(QUESTION)}**", "", _md(QUESTION_DETAIL), "",
                 f"{_md(self._status_counts())}.", "", "## Runs", ""]
        lines += _md_table(SUMMARY_COLUMNS, [
            [_summary_cells(r, self.values[r.run_id])[c] for c in SUMMARY_COLUMNS] for r in self.records])
        problems = _problems(self.records)
        if problems:
            lines += [""] + [f"- `{r.run_id}` {_md(text)}" for r, text in problems]
        lines += ["", "## Curves", "", "Dashed lines ending in × are runs that did not complete.", ""]
        lines += _md_images(self.curves, files)
        if self.by:
            lines += ["", f"## Grouped by {_md(self.by)}", "",
                      "Mean and sample standard deviation (n − 1) of the final val/bpb over completed "
                      "runs (seeds).", ""]
            lines += _md_images([self.group_figure], files) if self.group_figure else []
            lines += _md_table(_GROUP_HEADERS, [list(_group_cells(s).values()) for s in self.stats])
        if self.study is not None:
            lines += ["", f"## Study {_md(self.study.study_name)}", ""]
            trials = self._trials()
            lines += _md_table(("trial", "state", "value", "params", "run"),
                               [list(t.values()) for t in trials])
            lines += [""] + _md_images(self.study_figures, files)
        lines += [""] + [f"> {_md(note)}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


_GROUP_HEADERS = ("group", "n", "mean val/bpb", "std", "runs", "excluded")


def _group_cells(stat: GroupStat) -> dict[str, str]:
    return {"group": stat.value, "n": str(stat.n), "mean": fmt_metric(stat.mean),
            "std": fmt_metric(stat.std), "runs": ", ".join(stat.run_ids) or "—",
            "excluded": ", ".join(stat.excluded) or "—"}


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines


def _md_images(plots: Sequence[Plot], files: str) -> list[str]:
    """One paragraph per image, each followed by a blank line."""
    return [line for plot in plots for line in (f"![{_md(plot.title)}]({files}/{plot.name}.png)", "")]


# ---------------------------------------------------------------------------------------------
# W&B report (built offline; publish_wandb_report sends it)


def build_wandb_report(records: Sequence[RunRecord], entity: str, project: str, by: str | None = None,
                       title: str = DEFAULT_TITLE, group: str | None = None) -> Report:
    """The same panels as the HTML report, as a W&B Report over these runs (W&B run id == run id).

    The run set selects the runs by id, or the whole W&B group `group` when given (a study's
    group is its name). Entity and project are set on the Report only: a Runset that names them
    looks its project up over the network when converted (FIELD-NOTES), so this builds offline.
    """
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    records = list(records)
    if group is not None:
        filters = expr.And(expr.Metric("Group") == group)
        runset_name = f"group {group}"
    elif records:
        filters = expr.And(expr.Metric("ID").isin([r.run_id for r in records]))
        runset_name = f"{len(records)} run(s)"
    else:
        raise ValueError("a W&B report needs runs or a group")
    runset = wr.Runset(name=runset_name[:64], filters=filters)

    curves = [wr.LinePlot(title=f"{y} vs {label}", x="Step" if x == "step" else x, y=[y],
                          title_x=label, title_y=y)
              for y in CURVE_METRICS for x, label in CURVE_AXES]
    if by:
        comparison = [
            wr.BarPlot(title=f"final val/bpb by {by} (mean ± std)", metrics=["val/bpb"],
                       orientation="v", groupby=wr.Config(by), groupby_aggfunc="mean",
                       groupby_rangefunc="stddev"),
            wr.ScalarChart(title="mean final val/bpb", metric=wr.SummaryMetric("val/bpb"),
                           groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]
    else:
        comparison = [
            wr.BarPlot(title="final val/bpb per run", metrics=["val/bpb"], orientation="v"),
            wr.ScalarChart(title="mean final val/bpb", metric=wr.SummaryMetric("val/bpb"),
                           groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]
    values = {r.run_id: final_values(r) for r in records}
    numbers = "\n".join(_md_table(SUMMARY_COLUMNS, [
        [_summary_cells(r, values[r.run_id])[c] for c in SUMMARY_COLUMNS]
        for r in _sorted_for_table(records, values)]))
    if by:
        numbers += f"\n\n**Grouped by {_md(by)}** (completed runs; sample std)\n\n" + "\n".join(
            _md_table(_GROUP_HEADERS, [list(_group_cells(s).values()) for s in group_stats(records, by)]))
    blocks = [
        wr.MarkdownBlock(text=f"**{_md(QUESTION)}**\n\n{_md(QUESTION_DETAIL)}"),
        wr.H2(text="Curves"),
        wr.PanelGrid(runsets=[runset], panels=curves),
        wr.H2(text="Comparison"),
        wr.PanelGrid(runsets=[runset], panels=comparison),
        wr.H2(text="Numbers (from the local run store)"),
        wr.MarkdownBlock(text=numbers),
    ]
    return wr.Report(entity=entity, project=project, title=title[:128], description=QUESTION,
                     blocks=blocks)


def publish_wandb_report(report: Report) -> str:
    """Save the report to W&B (needs a login and the network) and return its URL."""
    report.save()
    return report.url
