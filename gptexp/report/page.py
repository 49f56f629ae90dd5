"""The report page: one self-contained HTML file and its Markdown twin.

    build_report(records, Path("report.html"), by="tokenizer.kind", study=study)

Plots are base64 PNGs, styles are inline, and the Content-Security-Policy forbids scripts and every
network load. The Markdown twin (same stem, `.md`) links the same PNGs, written into
`<stem>_files/`. Every value that comes from a run file is escaped: `e()` for HTML text and
attributes, `md()` for Markdown.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptexp import contract as C
from gptexp.report.compare import NOT_COMPARED, GroupStat, across_groups, describe, differing_fields, group_stats, show
from gptexp.report.plots import Plot, curve_plot, group_plot, study_plots
from gptexp.report.values import (CURVE_AXES, CURVE_METRICS, SUMMARY_COLUMNS, final_values, finite, fmt_bytes,
                                  fmt_count, fmt_metric, text)
from gptexp.tracking import RunRecord

if TYPE_CHECKING:  # slow to import
    import optuna

QUESTION_DETAIL = (
    "val/bpb is the summed cross-entropy of the predicted tokens divided by ln 2 times the UTF-8 "
    "bytes those tokens stand for. Unlike loss or accuracy per token it does not depend on how the "
    "text was cut into tokens, so it is the one metric comparable across tokenizers; lower is better. "
    "Curves are also drawn against bytes of text seen, the fair x-axis when tokens differ in length."
)
# No scripts, no fetches: the report can only show its own inline styles and data: images.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class ReportPaths:
    html: Path
    markdown: Path
    files_dir: Path  # the PNGs the Markdown links to
    plots: list[str] = field(default_factory=list)  # plot names, in page order
    notes: list[str] = field(default_factory=list)  # what could not be drawn, and why


def build_report(records: Sequence[RunRecord], out: Path, by: str | None = None,
                 study: optuna.Study | None = None, title: str | None = None,
                 ignore: Sequence[str] = ()) -> ReportPaths:
    """Write the HTML report `out` and its Markdown twin `out.with_suffix('.md')`.

    Every run appears in the table with its status; unfinished runs' partial curves are drawn; a
    "what differs" table lists the spec fields that differ between runs. `by` (a dotted spec field
    such as `tokenizer.kind`) adds the grouped comparison (runs differing in more than the seed
    and `ignore` are split, never averaged); `study` adds its trials with one column per
    hyperparameter and Optuna's history, importance and parallel-coordinate plots (or a note
    saying why not). The title and lead sentence are derived from the runs unless `title` is given.
    """
    out = Path(out)
    metrics = {r.run_id: r.metrics() for r in records}
    values = {r.run_id: final_values(r, metrics[r.run_id]) for r in records}
    records = sorted_for_table(list(records), values)

    plots = [curve_plot(records, metrics, y_key, x_key, x_label, by)
             for y_key in CURVE_METRICS for x_key, x_label in CURVE_AXES]
    notes: list[str] = []
    stats = group_stats(records, by, ignore=ignore) if by else []
    group_figure = group_plot(stats, by) if by else None
    if by and all(r.field(by) is None for r in records):
        notes.append(f"no run's spec has the field {by!r}: every run falls in '(unset)'.")
    if by and len({s.value for s in stats}) < len(stats):
        notes.append(f"runs with the same {by} but different settings were split into separate groups "
                     "(labelled by what differs), not averaged.")
    also = across_groups(records, by, ignore) if by else []
    if also:
        notes.append(f"the groups also differ in {', '.join(also)}: {by} alone may not explain the gap.")
    derived_title, lead = describe(records, by=by, study=study.study_name if study is not None else None,
                                   ignore=ignore)
    study_figures, study_notes = study_plots(study) if study is not None else ([], [])
    notes += study_notes
    all_plots = plots + ([group_figure] if group_figure else []) + study_figures

    out.parent.mkdir(parents=True, exist_ok=True)
    files_dir = out.parent / f"{out.stem}_files"
    files_dir.mkdir(exist_ok=True)
    for plot in all_plots:
        (files_dir / f"{plot.name}.png").write_bytes(plot.png)

    page = _Page(title or derived_title, lead, records, values, plots, by, stats, group_figure, study,
                 study_figures, study_notes, notes)
    out.write_text(page.html(), encoding="utf-8")
    markdown = out.with_suffix(".md")
    markdown.write_text(page.markdown(files_dir.name), encoding="utf-8")
    return ReportPaths(out, markdown, files_dir, [p.name for p in all_plots], notes)


def sorted_for_table(records: list[RunRecord], values: dict[str, dict[str, Any]]) -> list[RunRecord]:
    """Completed runs first, best val/bpb first; then the rest, in the order given."""
    def key(item: tuple[int, RunRecord]) -> tuple[int, float, int]:
        index, record = item
        bpb = finite(values[record.run_id][C.VAL_BPB]) if record.status == C.COMPLETED else None
        return (0 if bpb is not None else 1, bpb if bpb is not None else 0.0, index)

    return [record for _, record in sorted(enumerate(records), key=key)]


def e(value: Any) -> str:
    """HTML-escape any user string (names, errors, spec values), quotes included."""
    return html.escape(str(value), quote=True)


def md(value: Any) -> str:
    """A user string safe in a Markdown table cell: no inline HTML, links, emphasis or pipes."""
    text = " ".join(str(value).split())
    for char in "\\`*_[]|":
        text = text.replace(char, "\\" + char)
    return html.escape(text, quote=False)


def summary_cells(record: RunRecord, values: dict[str, Any]) -> dict[str, str]:
    return {
        "id": record.run_id,
        "name": record.name,
        C.VAL_BPB: fmt_metric(values[C.VAL_BPB]),
        C.VAL_LOSS: fmt_metric(values[C.VAL_LOSS]),
        C.VAL_ACC: fmt_metric(values[C.VAL_ACC]),
        "tokenizer": _tokenizer_text(record),
        "objective": text(record.field("objective.kind")),
        "parameters": fmt_count(values[C.SUMMARY_PARAMETERS]),
        "steps": text(values[C.SUMMARY_STEPS]),
        "bytes seen": fmt_bytes(values[C.BYTES_SEEN]),
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

STATUS_CLASSES = set(C.RUN_STATUSES)
_NUMERIC = {*C.VAL_METRICS, "parameters", "steps", "bytes seen"}


@dataclass
class _Page:
    """Everything one report shows, rendered as HTML or as Markdown."""

    title: str
    lead: str  # one sentence saying what the runs compare
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

    def _trials(self) -> tuple[list[str], list[dict[str, str]]]:
        """The trials table: its columns (one per hyperparameter) and one row per trial."""
        trials = self.study.get_trials(deepcopy=False)
        names = sorted({name for trial in trials for name in trial.params})
        rows = []
        for trial in trials:
            value = trial.values[0] if trial.values else None
            row = {"trial": str(trial.number), "state": trial.state.name.lower(), "value": fmt_metric(value)}
            for name in names:
                param = trial.params.get(name)
                row[name] = "—" if param is None else f"{param:.4g}" if isinstance(param, float) else str(param)
            row["run"] = text(trial.user_attrs.get("run_id"))
            rows.append(row)
        return ["trial", "state", "value", *names, "run"], rows

    def _differs(self) -> tuple[list[str], list[list[str]]]:
        """The "what differs" table: the spec fields that differ between the runs, one row per run."""
        fields = differing_fields(self.records, leave_out=NOT_COMPARED)
        return fields, [[show(record.field(f)) for f in fields] for record in self.records]

    # HTML ---------------------------------------------------------------------------------
    def html(self) -> str:
        generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        parts = [
            "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{e(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{e(self.title)}</h1>",
            f'<p class="question">{e(self.lead)}</p>',
            f'<p class="muted">{e(QUESTION_DETAIL)}</p>',
            f'<p class="muted">{e(self._status_counts())}. Generated {generated} by gptexp.</p>'
            "</header>",
            "<h2>Runs</h2>", self._html_summary(), self._html_problems(),
            "<h2>What differs</h2>", self._html_differs(),
            "<h2>Curves</h2>",
            '<p class="muted">Dashed lines ending in × are runs that did not complete.</p>',
            self._html_figures(self.curves),
        ]
        if self.by:
            parts += [f"<h2>Grouped by {e(self.by)}</h2>", self._html_groups()]
        if self.study is not None:
            parts += [f"<h2>Study {e(self.study.study_name)}</h2>", self._html_trials(),
                      self._html_figures(self.study_figures)]
            parts += [f'<p class="note">{e(note)}</p>' for note in self.study_notes]
        parts += [f'<p class="note">{e(note)}</p>' for note in self.notes
                  if note not in self.study_notes]
        parts.append("</body></html>\n")
        return "\n".join(parts)

    def _html_summary(self) -> str:
        head = "".join(f'<th class="lead">{e(c)}</th>' if c == C.VAL_BPB else f"<th>{e(c)}</th>"
                       for c in SUMMARY_COLUMNS)
        body = []
        for record in self.records:
            cells = summary_cells(record, self.values[record.run_id])
            tds = []
            for column in SUMMARY_COLUMNS:
                classes = ["num"] if column in _NUMERIC else []
                if column == C.VAL_BPB:
                    classes.append("lead")
                if column == "status":  # a status.json may say anything: only known words become classes
                    classes.append(f"status-{cells[column]}" if cells[column] in STATUS_CLASSES else "status-other")
                tds.append(f'<td class="{e(" ".join(classes))}" data-col="{e(column)}">'
                           f"{e(cells[column])}</td>")
            body.append(f'<tr data-run-id="{e(record.run_id)}">{"".join(tds)}</tr>')
        if not self.records:
            body.append(f'<tr><td colspan="{len(SUMMARY_COLUMNS)}">no runs</td></tr>')
        return (f'<table id="summary"><thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table>')

    def _html_differs(self) -> str:
        fields, rows = self._differs()
        if not fields:
            return '<p class="muted" id="differs">The runs\' specs are identical (name and tracking aside).</p>'
        head = "<th>id</th>" + "".join(f"<th>{e(f)}</th>" for f in fields)
        body = "".join(
            f'<tr data-run-id="{e(record.run_id)}"><td data-col="id">{e(record.run_id)}</td>' +
            "".join(f'<td data-col="{e(f)}">{e(v)}</td>' for f, v in zip(fields, row)) + "</tr>"
            for record, row in zip(self.records, rows))
        return (f'<p class="muted">Resolved-spec fields that are not the same in every run.</p>'
                f'<table id="differs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')

    def _html_problems(self) -> str:
        items = [f"<li><code>{e(r.run_id)}</code> {e(text)}</li>" for r, text in _problems(self.records)]
        return f'<ul id="problems">{"".join(items)}</ul>' if items else ""

    def _html_figures(self, plots: list[Plot]) -> str:
        figures = []
        for plot in plots:
            data = base64.b64encode(plot.png).decode("ascii")
            figures.append(
                f'<figure class="plot" id="plot-{e(plot.name)}">'
                f'<img src="data:image/png;base64,{data}" alt="{e(plot.title)}">'
                f"<figcaption>{e(plot.title)}</figcaption></figure>")
        return f'<div class="plots">{"".join(figures)}</div>'

    def _html_groups(self) -> str:
        rows = []
        for stat in self.stats:
            cells = group_cells(stat)
            rows.append(f'<tr data-group="{e(stat.label)}">' + "".join(
                f'<td class="{"num" if k not in ("group", "runs", "excluded") else ""}" '
                f'data-col="{k}">{e(v)}</td>' for k, v in cells.items()) + "</tr>")
        head = "".join(f"<th>{e(h)}</th>" for h in GROUP_HEADERS)
        table = f'<table id="groups"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        explain = ('<p class="muted">Mean and sample standard deviation (n − 1) of the final val/bpb '
                   "over completed runs (seeds); runs that did not complete are listed, not counted.</p>")
        figure = self._html_figures([self.group_figure]) if self.group_figure else ""
        return explain + figure + table

    def _html_trials(self) -> str:
        columns, trials = self._trials()
        head = "".join(f"<th>{e(h)}</th>" for h in columns)
        rows = "".join(
            f'<tr data-trial="{e(t["trial"])}">' + "".join(
                f'<td data-col="{e(k)}">{e(v)}</td>' for k, v in t.items()) + "</tr>"
            for t in trials)
        direction = ", ".join(d.name.lower() for d in self.study.directions)
        return (f'<p class="muted">Objective: {e(direction)} the trial value (val/bpb).</p>'
                f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>')

    # Markdown -----------------------------------------------------------------------------
    def markdown(self, files: str) -> str:
        lines = [f"# {md(self.title)}", "", f"**{md(self.lead)}**", "", md(QUESTION_DETAIL), "",
                 f"{md(self._status_counts())}.", "", "## Runs", ""]
        lines += markdown_table(SUMMARY_COLUMNS, [
            [summary_cells(r, self.values[r.run_id])[c] for c in SUMMARY_COLUMNS] for r in self.records])
        problems = _problems(self.records)
        if problems:
            lines += [""] + [f"- {md(r.run_id)}: {md(text)}" for r, text in problems]
        fields, rows = self._differs()
        lines += ["", "## What differs", ""]
        lines += markdown_table(["id", *fields], [[r.run_id, *row] for r, row in zip(self.records, rows)]) \
            if fields else ["The runs' specs are identical (name and tracking aside)."]
        lines += ["", "## Curves", "", "Dashed lines ending in × are runs that did not complete.", ""]
        lines += _md_images(self.curves, files)
        if self.by:
            lines += ["", f"## Grouped by {md(self.by)}", "",
                      "Mean and sample standard deviation (n − 1) of the final val/bpb over completed "
                      "runs (seeds).", ""]
            lines += _md_images([self.group_figure], files) if self.group_figure else []
            lines += markdown_table(GROUP_HEADERS, [list(group_cells(s).values()) for s in self.stats])
        if self.study is not None:
            lines += ["", f"## Study {md(self.study.study_name)}", ""]
            columns, trials = self._trials()
            lines += markdown_table(columns, [list(t.values()) for t in trials])
            lines += [""] + _md_images(self.study_figures, files)
        lines += [""] + [f"> {md(note)}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


GROUP_HEADERS = ("group", "n", "mean val/bpb", "std", "runs", "excluded")


def group_cells(stat: GroupStat) -> dict[str, str]:
    return {"group": stat.label, "n": str(stat.n), "mean": fmt_metric(stat.mean),
            "std": fmt_metric(stat.std), "runs": ", ".join(stat.run_ids) or "—",
            "excluded": ", ".join(stat.excluded) or "—"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(md(cell) for cell in row) + " |" for row in rows]
    return lines


def _md_images(plots: Sequence[Plot], files: str) -> list[str]:
    """One paragraph per image, each followed by a blank line."""
    return [line for plot in plots for line in (f"![{md(plot.title)}]({files}/{plot.name}.png)", "")]

