"""The `gptexp` command line (typer). Each command validates its input, then hands off.

Exit codes (DESIGN.md): 0 success, 1 the run failed, 2 bad input, 3 pruned, 130/143 interrupted.
Heavy imports (torch, wandb, optuna, matplotlib) happen inside the commands that need them, so
`gptexp --help`, `gptexp runs` and the launcher stay fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console

from gptexp.spec import SpecError

app = typer.Typer(
    name="gptexp",
    help="Experiments with small GPT-style language models: specs in YAML, torchrun DDP training, "
    "W&B tracking, Optuna sweeps and fair (bits-per-byte) reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
try:
    from gptexp.tokenizers.cli import app as tokenizer_app
    app.add_typer(tokenizer_app, name="tokenizer", help="Train tokenizers and export them to Hugging Face format.")
except ImportError:
    pass

stdout = Console()
stderr = Console(stderr=True)


RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="GPTEXP_RUNS_DIR", help="where runs live")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one short message (no traceback) and exit; code 2 = bad input."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def check_runs_dir(runs_dir: Path) -> Path:
    if runs_dir.exists() and not runs_dir.is_dir():
        fail(f"--runs-dir {runs_dir}: not a directory")
    return runs_dir


@app.command()
def run(
    spec_path: Annotated[Optional[Path], typer.Argument(metavar="SPEC", help="experiment spec (YAML)", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override a spec field: --set train.max_steps=100 (value parsed as YAML); repeatable")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="processes (DDP ranks) on this node; overrides launch.nproc")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", min=1, help="nodes of a multi-node run (start the same command on each)")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (multi-node)")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="run id shared by every node of a multi-node run")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="human name of the run (the run id is derived from it)")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="RUN", help="continue a stopped or crashed run (id or directory)")] = None,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Validate SPEC, launch a torchrun job that trains it, and print the run directory.

    Exit codes: 0 completed, 1 failed, 2 bad input, 3 pruned (sweeps), 130/143 interrupted (a
    checkpoint was written; continue with `gptexp run --resume RUN`).
    """
    from gptexp import launch

    runs_dir = check_runs_dir(runs_dir)
    try:
        if resume is not None:
            if spec_path is not None or overrides or name:
                fail("--resume RUN continues a run as it was: give no SPEC, --set or --name with it")
            result = launch.resume_run(runs_dir, resume, progress=_progress)
        else:
            if spec_path is None:
                fail("missing SPEC (a YAML experiment spec), or --resume RUN")
            spec = _load_spec_with_flags(spec_path, overrides or [], nproc, nnodes, rdzv_endpoint, run_id, name)
            if spec.launch.run_id is not None:
                _check_run_id(spec.launch.run_id)
            result = launch.start_run(spec, runs_dir, progress=_progress)
    except SpecError as error:
        fail(str(error))
    _print_outcome(result)
    raise typer.Exit(result.exit_code)


def _load_spec_with_flags(spec_path: Path, overrides: list[str], nproc: int | None, nnodes: int | None,
                          rdzv_endpoint: str | None, run_id: str | None, name: str | None):  # -> ExperimentSpec
    from gptexp.spec import load_spec

    flag_overrides = []
    for key, value in (("launch.nproc", nproc), ("launch.nnodes", nnodes)):
        if value is not None:
            flag_overrides.append(f"{key}={value}")
    spec = load_spec(spec_path, list(overrides) + flag_overrides)
    # Strings are assigned, not parsed as YAML, so a name like "123" or "yes" stays a string.
    if name is not None:
        if not name.strip():
            raise SpecError("--name: must not be empty")
        spec.name = name
    if rdzv_endpoint is not None:
        spec.launch.rdzv_endpoint = rdzv_endpoint
    if run_id is not None:
        spec.launch.run_id = run_id
    return spec


def _check_run_id(run_id: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", run_id):
        raise SpecError(f"--run-id {run_id!r}: use 1-64 letters, digits, '-' or '_' (it names a directory)")


def _progress(message: str) -> None:
    stderr.print(f"[dim]{message}[/]")


def _print_outcome(result) -> None:  # result: launch.LaunchResult
    status_colour = {"completed": "green", "pruned": "yellow", "interrupted": "yellow"}.get(result.status, "red")
    stdout.print(f"run [bold]{result.run_id}[/] [{status_colour}]{result.status}[/] (exit {result.exit_code})", highlight=False)
    stdout.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)
    wandb_dirs = sorted((result.run_dir / "wandb").glob("offline-run-*"))
    if wandb_dirs:
        stdout.print(f"sync to W&B:   wandb sync {result.run_dir / 'wandb'}/offline-run-*", highlight=False, soft_wrap=True)
    if result.status == "interrupted":
        stdout.print(f"resume with:   gptexp run --resume {result.run_id}", highlight=False)
    if result.status == "failed":
        from gptexp.tracking import RunStore

        error = RunStore(result.run_dir).read_status().get("error")
        if error:
            stderr.print(f"[red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)


@app.command()
def runs(
    group: Annotated[Optional[str], typer.Option("--group", help="only runs of this W&B group")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="only trials of this Optuna study")] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", help="only runs with this status (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows instead of a table")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """A table of runs: id, name, status, tokenizer, objective, parameters, steps, val metrics."""
    from gptexp.report import filter_runs, runs_rows, runs_table
    from gptexp.tracking import list_runs

    runs_dir = check_runs_dir(runs_dir)
    records = filter_runs(list_runs(runs_dir), group=group, study=study, statuses=status)
    rows = runs_rows(records)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        stderr.print(f"no runs in {runs_dir}")
        return
    stdout.print(runs_table(rows))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
