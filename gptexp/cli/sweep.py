"""`gptexp sweep`: run an Optuna sweep (SWEEP file) or show a study (`status`).

One command whose first argument is either a sweep file or the word `status`: a click group with
an optional positional argument would swallow the word "status" as a file name, or the reverse.
optuna is imported only when the command runs. Study names, parameters and errors come from the
storage: they are printed as plain text, never as rich markup (a choice "[/oops]" is a value).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from gptexp.cli.console import stdout, wide_console
from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir, writable_runs_dir
from gptexp.contract import ENV_OPTUNA_STORAGE, EXIT_SIGINT, EXIT_SIGTERM

STATUS = "status"
POSTGRES_HINT = "for PostgreSQL: pip install 'gptexp[postgres]'"


def sweep(
    target: Annotated[str, typer.Argument(metavar="SWEEP|status", help="a sweep file (YAML) to run, or the word 'status' to show a study", show_default=False)],
    study_name: Annotated[Optional[str], typer.Argument(metavar="[STUDY]", help="status only: the study to show (default: the only one in the storage)", show_default=False)] = None,
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", min=1, help="trials in the study in total (overrides n_trials); a rerun adds trials up to it")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="trials run at once by this process, 1 to 64 (overrides workers)")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", envvar=ENV_OPTUNA_STORAGE, show_envvar=True, help="Optuna storage URL: postgresql+psycopg://user@host/db, journal:///shared/path/study.journal (a file on a shared filesystem, no server), sqlite:///path.db (default: sqlite <runs-dir>/optuna.db)", show_default=False)] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="study name (overrides study; default: the sweep file's name)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override a sweep field: --set pruner.kind=none (value parsed as YAML); repeatable")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="status only: print JSON instead of a table")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Run an Optuna sweep whose trials are gptexp runs, or show a study's trials.

    gptexp sweep SWEEP [--n-trials N] [--workers K] [--storage URL] [--study NAME] [--set k=v]... creates the study or resumes it (n_trials counts all trials of the study, so a rerun adds trials up to it) and trains each trial as a run in --runs-dir. Several processes, on one or several machines, may work on one study through a shared PostgreSQL or journal --storage (`gptexp launch-file SWEEP --slurm --array N` writes a Slurm job array of such workers). Ctrl-C stops the running trials (they are queued again); run the same command to resume.

    gptexp sweep status [STUDY] [--storage URL | --runs-dir D] [--json] shows the trials (number, state, params, value, run id) and the best one; without STUDY it lists the studies when there are several.

    Exit codes: 0 the study is done and every trial this process ran completed or was pruned; 1 a trial this process ran failed after its retries (the last line names them) or a sweep worker hit an unexpected error; 2 bad input; 130/143 interrupted (run it again to resume).
    """
    runs_dir = checked_runs_dir(runs_dir)
    if target == STATUS:
        if n_trials is not None or workers is not None or overrides:
            fail("--n-trials, --workers and --set run a sweep; `gptexp sweep status` only shows one")
        _status(study_name or study, storage, runs_dir, as_json)
        return
    if study_name is not None:
        fail(f"unexpected argument {study_name!r}: STUDY goes with `gptexp sweep status`; use --study NAME to name a sweep's study")
    if as_json:
        fail("--json goes with `gptexp sweep status`")
    writable_runs_dir(runs_dir)
    _run(Path(target), n_trials, workers, storage, study, overrides or [], runs_dir)


def _run(path: Path, n_trials: int | None, workers: int | None, storage: str | None, study: str | None,
         overrides: list[str], runs_dir: Path) -> None:
    from gptexp.spec import SpecError, check_data_file
    from gptexp.sweep.spec import load_sweep_spec

    flags = [f"{key}={value}" for key, value in (("n_trials", n_trials), ("workers", workers)) if value is not None]
    spec = load_sweep_spec(path, overrides + flags, study=study, storage=storage)
    base = spec.build_experiment({})
    check_data_file(base)
    from gptexp import preflight

    preflight.check(base)  # a device this machine lacks would fail every trial; each trial is checked again

    from gptexp.sweep.runner import Sweep
    from gptexp.redaction import redact

    runner = Sweep(spec, runs_dir, log=lambda message: stdout.print(message, highlight=False, markup=False, soft_wrap=True))
    try:
        result = runner.run()
    except SpecError:
        raise  # bad input found while running: errors.py makes it exit 2
    except ImportError as error:
        fail(f"storage {redact(runner.storage_url, known=[runner.storage_url])}: {error} ({POSTGRES_HINT})")
    except Exception as error:  # noqa: BLE001 - a storage that cannot be reached: one line, no traceback
        fail(redact(f"storage {runner.storage_url}: {type(error).__name__}: {error}", known=[runner.storage_url]))
    status = _load_status(result.storage_url, result.study_name)
    if status is not None:
        _print_status(status)
    if result.exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
        stdout.print(f"interrupted: resume with the same command (gptexp sweep {path} ...)", highlight=False, markup=False)
    raise typer.Exit(result.exit_code)


def _load_status(storage_url: str, study_name: str) -> dict[str, Any] | None:
    from gptexp.sweep.status import study_status

    try:
        return study_status(storage_url, study_name)
    except Exception:  # noqa: BLE001 - the sweep's own outcome matters more than this table
        return None


def _status(study: str | None, storage: str | None, runs_dir: Path, as_json: bool) -> None:
    from gptexp.sweep.status import study_names, study_status
    from gptexp.redaction import redact
    from gptexp.sweep.storage import default_storage_url, normalize_url, storage_file

    url = normalize_url(storage or default_storage_url(runs_dir))
    db = storage_file(url)  # SQLite or journal: opening a missing file would create it
    if db is not None and not db.is_file():
        fail(f"no sweep storage at {db} (run a sweep with --runs-dir {runs_dir}, or give --storage URL)")
    try:
        names = study_names(url)
    except ImportError as error:
        fail(f"storage {redact(url, known=[url])}: {error} ({POSTGRES_HINT})")
    except Exception as error:  # noqa: BLE001
        fail(redact(f"storage {url}: {type(error).__name__}: {error}", known=[url]))
    if study is None:
        if len(names) == 1:
            study = names[0][0]
        else:
            if as_json:
                print(json.dumps({"storage": redact(url, known=[url]), "studies": [{"study": n, "trials": c} for n, c in names]}, indent=2))
                return
            if not names:
                fail(f"no studies in {redact(url, known=[url])}")
            from rich.table import Table

            table = Table(title=Text(f"studies in {redact(url, known=[url])}"))
            table.add_column("study")
            table.add_column("trials", justify="right")
            for name, count in names:
                table.add_row(Text(name), str(count))
            stdout.print(table)
            stdout.print("show one with: gptexp sweep status STUDY", highlight=False, markup=False)
            return
    if study not in {name for name, _ in names}:
        known = ", ".join(name for name, _ in names) or "none"
        fail(f"no study {study!r} in {redact(url, known=[url])} (studies: {known})")
    status = study_status(url, study)
    if as_json:
        print(json.dumps(status, indent=2, default=str))
        return
    _print_status(status)


def _print_status(status: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    from gptexp.sweep.status import format_params

    metric = status.get("metric") or "value"
    counts = ", ".join(f"{count} {state.lower()}" for state, count in sorted(status["counts"].items()))
    table = Table(title=Text(f"study {status['study']} ({status['direction']} {metric}): {counts or 'no trials'}"),
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    for column, justify in (("#", "right"), ("state", "left"), (metric, "right"), ("params", "left"),
                            ("steps", "right"), ("run id", "left"), ("note", "left")):
        table.add_column(Text(column), justify=justify, no_wrap=column != "note", overflow="fold",
                         min_width=12 if column == "note" else None)
    colours = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan", "WAITING": "dim"}
    best_number = status["best"]["number"] if status["best"] else None
    for row in status["trials"]:
        note = row["error"] or (f"retry of {row['retry_of']}" if row["retry_of"] is not None else "")
        if row["number"] == best_number:
            note = "best"
        table.add_row(str(row["number"]), Text(row["state"], style=colours.get(row["state"], "")),
                      "" if row["value"] is None else f"{row['value']:.4f}", Text(format_params(row["params"], "\n")),
                      "" if row["steps"] is None else str(row["steps"]), Text(row["run_id"] or ""), Text(str(note)))
    wide_console(160).print(table)  # a pipe (logs, CI) gets the whole table rather than cut ids
    best = status["best"]
    if best is None:
        stdout.print("best: no completed trial yet", highlight=False, markup=False)
    else:
        stdout.print(f"best: trial {best['number']} {metric}={best['value']:.4f} run {best['run_id']} "
                     f"{format_params(best['params'])}", highlight=False, markup=False, soft_wrap=True)
