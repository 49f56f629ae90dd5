"""`gptexp report`: compare runs in one self-contained HTML page (plus Markdown, optionally W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gptexp.cli.console import note, stdout
from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir, writable_file
from gptexp.contract import ENV_OPTUNA_STORAGE

if TYPE_CHECKING:
    import optuna


def report(
    run_ids: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN]...", help="runs to compare (ids or directories); none = all runs", show_default=False)] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="the runs of this W&B group")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="the trials of this Optuna study (adds its optimization plots)")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL of --study (default: the runs dir's own)", envvar=ENV_OPTUNA_STORAGE, show_envvar=False)] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="group runs by a spec field (e.g. tokenizer.kind), mean ± std over runs that differ in the seed alone; runs that differ in more are split into groups labelled by what differs")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option("--ignore", metavar="FIELD", help="with --by: a spec field whose differences may still be averaged, like the seed (repeatable)")] = None,
    title: Annotated[Optional[str], typer.Option("--title", help="the report's title (default: derived from what the runs differ in)")] = None,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write; a Markdown twin goes beside it")] = Path("report.html"),
    to_wandb: Annotated[bool, typer.Option("--wandb", help="also publish a W&B Report (needs tracking online and a login)")] = False,
    entity: Annotated[Optional[str], typer.Option("--entity", help="W&B entity for --wandb")] = None,
    project: Annotated[str, typer.Option("--project", help="W&B project for --wandb")] = "gptexp",
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Compare runs in one self-contained HTML report (and a Markdown twin).

    It holds a summary table led by val/bpb, a table of the spec fields that differ between the
    runs, curves against steps and against bytes of text seen (the fair x-axis across tokenizers),
    a grouped comparison (--by tokenizer.kind: mean ± std over runs that differ in the seed alone;
    unlike runs are split, never averaged), and for --study the trials with one column per
    hyperparameter and the optimization history, parameter importances and parallel coordinates.
    Running, crashed and failed runs are shown with their status. The title says what the runs
    compare (or give --title).
    """
    from gptexp.report import build_report, check_field, filter_runs
    from gptexp.tracking import list_runs, load_run, run_dir_for

    runs_dir = checked_runs_dir(runs_dir)
    if run_ids and (group or study):
        fail("give RUN ids, or --group, or --study, not several")
    if ignore and by is None:
        fail("--ignore goes with --by")
    if run_ids:
        records = [load_run(run_dir_for(runs_dir, run)) for run in run_ids]  # RunStoreError: exit 2
    else:
        records = filter_runs(list_runs(runs_dir), group=group, study=study)
    if not records:
        fail(f"no runs to report in {runs_dir}" + (f" (group {group!r})" if group else "") + (f" (study {study!r})" if study else ""))
    for flag, path in ([("--by", by)] if by else []) + [("--ignore", field) for field in ignore or []]:
        check_field(path, records, flag)  # UnknownFieldError (nearest paths suggested): exit 2
    writable_file(out, "--out")
    optuna_study = _load_study(study, storage, runs_dir) if study else None
    paths = build_report(records, out, by=by, study=optuna_study, title=title, ignore=ignore or ())
    stdout.print(f"report: {paths.html}", highlight=False, markup=False, soft_wrap=True)
    stdout.print(f"markdown: {paths.markdown}", highlight=False, markup=False, soft_wrap=True)
    if to_wandb:
        from gptexp.report import build_wandb_report, publish_wandb_report

        if not entity:
            fail("--wandb needs --entity (your W&B user or team)")
        url = publish_wandb_report(build_wandb_report(records, entity=entity, project=project, by=by,
                                                      title=title, ignore=ignore or ()))
        stdout.print(f"W&B report: {url}", highlight=False, markup=False)


def _load_study(study: str, storage: str | None, runs_dir: Path) -> optuna.Study | None:
    """The Optuna study for the report's plots, or None (with a note) when it cannot be opened."""
    try:
        import optuna

        from gptexp.sweep.storage import default_storage_url, open_storage

        url = storage or default_storage_url(runs_dir)
        return optuna.load_study(study_name=study, storage=open_storage(url))
    except Exception as error:  # noqa: BLE001 - the report is still useful without the study plots
        from gptexp.redaction import redact

        note(f"note: study plots left out: {redact(str(error))}", style="yellow")
        return None
