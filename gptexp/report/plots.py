"""The report's plots: matplotlib Figure objects directly (no pyplot state, no GUI backend), as PNGs.

matplotlib and optuna are imported inside the functions: `gptexp runs` pays for neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gptexp import contract as C
from gptexp.report.compare import GroupStat
from gptexp.report.values import finite, group_key
from gptexp.tracking import RunRecord

if TYPE_CHECKING:  # slow to import
    import optuna


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
        (x, y) for x, y in ((finite(r.get(x_key)), finite(r.get(y_key))) for r in rows)
        if x is not None and y is not None
    )
    return [x for x, _ in points], [y for _, y in points]


def _run_colours(records: list[RunRecord], by: str | None) -> dict[str, Any]:
    """One colour per run, or one per group value when comparing `by`, so seeds form a bundle."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(records) <= 10 else "tab20"].colors
    if by is None:
        return {r.run_id: palette[i % len(palette)] for i, r in enumerate(records)}
    keys = sorted({group_key(r.field(by)) for r in records})
    return {r.run_id: palette[keys.index(group_key(r.field(by))) % len(palette)] for r in records}


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
        label = record.run_id if by is None else f"{group_key(record.field(by))}: {record.run_id}"
        finished = record.status == C.COMPLETED
        if not finished:
            label += f" ({record.status})"
        ax.plot(xs, ys, color=colours[record.run_id], linestyle="-" if finished else "--",
                linewidth=1.4, label=_plain(label))
        if not finished:
            ax.plot(xs[-1:], ys[-1:], marker="x", color=colours[record.run_id], markersize=8)
        drawn += 1
    if x_key == C.BYTES_SEEN:
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


def group_plot(stats: list[GroupStat], by: str, metric: str = C.VAL_BPB) -> Plot:
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
    ax.set_xticks(list(positions), [_plain(s.label) for s in stats])
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

