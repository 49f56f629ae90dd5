"""The `gptexp` command line (typer). Each command validates its input, then hands off.

Exit codes (DESIGN.md): 0 success, 1 the run failed, 2 bad input, 3 pruned, 130/143 interrupted.
Heavy imports (torch, wandb, optuna, matplotlib) happen inside the commands that need them, so
`gptexp --help`, `gptexp runs` and the launcher stay fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from gptexp.spec import SpecError
from gptexp.launchfiles_cli import register as register_launch_file
from gptexp.sweep_cli import register as register_sweep
from gptexp.tokenizers.cli import app as tokenizer_app

app = typer.Typer(
    name="gptexp",
    help="Experiments with small GPT-style language models: specs in YAML, torchrun DDP training, "
    "W&B tracking, Optuna sweeps and fair (bits-per-byte) reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(tokenizer_app, name="tokenizer", help="Train tokenizers and export them to Hugging Face format.")

stdout = Console()
stderr = Console(stderr=True)


RunsDir = Annotated[Path, typer.Option("--runs-dir", envvar="GPTEXP_RUNS_DIR", help="where runs live")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one short message (no traceback) and exit; code 2 = bad input."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
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
            stderr.print(f"[red]error:[/] {escape(str(error))}", highlight=False, markup=True, soft_wrap=True)


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
    # A pipe or a file has no width to respect: print the table whole instead of squeezing it.
    console = stdout if stdout.is_terminal else Console(width=max(stdout.width, 200))
    console.print(runs_table(rows))


def _resolve_run(runs_dir: Path, run: str) -> Path:
    from gptexp.tracking import RunStoreError, run_dir_for

    try:
        return run_dir_for(check_runs_dir(runs_dir), run)
    except RunStoreError as error:
        fail(str(error))


@app.command("eval")
def eval_command(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run id or directory")],
    data: Annotated[Path, typer.Option("--data", help="any UTF-8 text file to evaluate on")],
    batches: Annotated[Optional[int], typer.Option("--batches", min=1, help="evaluate at most N batches (default: the whole file)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="windows per batch")] = 32,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best (lowest val/bpb, falls back to last) or last")] = "best",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Evaluate a run's checkpoint on a text file; prints JSON with val/loss, val/bpb, val/acc.

    The run's own objective is used (MLM masks are seeded, so repeated evals agree). Characters a
    char tokenizer never saw count as <unk>, and their bytes still count in val/bpb.
    """
    from gptexp.spec import SpecError

    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint {checkpoint!r}: expected best or last")
    run_dir = _resolve_run(runs_dir, run)
    text = _read_text_file(data, "--data")
    from gptexp.evaluate import evaluate_text, load_trained_run

    try:
        metrics = evaluate_text(load_trained_run(run_dir, checkpoint), text, batch_size, batches)
    except SpecError as error:
        fail(str(error))
    print(json.dumps(metrics))


@app.command()
def generate(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run id or directory (a causal model)")],
    prompt: Annotated[str, typer.Option("--prompt", help="text to continue")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="tokens to sample")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="sample among the k most likely tokens")] = None,
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute attention over the whole context for every token (slower; for checking)")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Sample text from a causal model (clm runs) with a KV cache."""
    from gptexp.spec import SpecError

    run_dir = _resolve_run(runs_dir, run)
    from gptexp.evaluate import generate_text, load_trained_run

    try:
        text = generate_text(load_trained_run(run_dir), prompt, max_new_tokens, temperature, top_k, seed,
                             use_cache=not no_cache)
    except (SpecError, ValueError) as error:
        fail(str(error))
    print(text)


def _read_text_file(path: Path, flag: str) -> str:
    if not path.exists():
        fail(f"{flag} {path}: file not found")
    if path.is_dir():
        fail(f"{flag} {path}: is a directory, expected a text file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        fail(f"{flag} {path}: not UTF-8 text (byte {error.start})")
    except OSError as error:
        fail(f"{flag} {path}: cannot read ({error.strerror})")
    if not text.strip():
        fail(f"{flag} {path}: file is empty")
    return text


@app.command()
def report(
    run_ids: Annotated[Optional[list[str]], typer.Argument(metavar="[RUN]...", help="runs to compare (ids or directories); none = all runs", show_default=False)] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="the runs of this W&B group")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="the trials of this Optuna study (adds its optimization plots)")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL of --study (default: the runs dir's own)", envvar="GPTEXP_OPTUNA_STORAGE", show_envvar=False)] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="group runs by a spec field and compare (e.g. tokenizer.kind: char vs BPE, mean ± std)")] = None,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write; a Markdown twin goes beside it")] = Path("report.html"),
    to_wandb: Annotated[bool, typer.Option("--wandb", help="also publish a W&B Report (needs tracking online and a login)")] = False,
    entity: Annotated[Optional[str], typer.Option("--entity", help="W&B entity for --wandb")] = None,
    project: Annotated[str, typer.Option("--project", help="W&B project for --wandb")] = "gptexp",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Compare runs in one self-contained HTML report (and a Markdown twin).

    It holds a summary table led by val/bpb, curves against steps and against bytes of text seen
    (the fair x-axis across tokenizers), a grouped comparison (--by tokenizer.kind: mean ± std
    over seeds), and for --study the optimization history, parameter importances and parallel
    coordinates. Running, crashed and failed runs are shown with their status.
    """
    from gptexp.report import build_report, filter_runs
    from gptexp.tracking import RunStoreError, list_runs, load_run, run_dir_for

    runs_dir = check_runs_dir(runs_dir)
    if run_ids and (group or study):
        fail("give RUN ids, or --group, or --study, not several")
    if out.exists() and out.is_dir():
        fail(f"--out {out}: is a directory, expected an .html file path")
    if by is not None and not all(part.isidentifier() for part in by.split(".")):
        fail(f"--by {by!r}: expected a dotted spec field such as tokenizer.kind")
    try:
        if run_ids:
            records = [load_run(run_dir_for(runs_dir, run)) for run in run_ids]
        else:
            records = filter_runs(list_runs(runs_dir), group=group, study=study)
    except RunStoreError as error:
        fail(str(error))
    if not records:
        fail(f"no runs to report in {runs_dir}" + (f" (group {group!r})" if group else "") + (f" (study {study!r})" if study else ""))
    optuna_study = _load_study(study, storage, runs_dir) if study else None
    paths = build_report(records, out, by=by, study=optuna_study)
    stdout.print(f"report: {paths.html}", highlight=False, soft_wrap=True)
    stdout.print(f"markdown: {paths.markdown}", highlight=False, soft_wrap=True)
    if to_wandb:
        from gptexp.report import build_wandb_report, publish_wandb_report

        if not entity:
            fail("--wandb needs --entity (your W&B user or team)")
        url = publish_wandb_report(build_wandb_report(records, entity=entity, project=project, by=by))
        stdout.print(f"W&B report: {url}", highlight=False)


def _load_study(study: str, storage: str | None, runs_dir: Path):  # -> optuna.Study | None
    """The Optuna study for the report's plots, or None (with a note) when it cannot be opened."""
    try:
        import optuna

        from gptexp.sweep.storage import default_storage_url, open_storage

        url = storage or default_storage_url(runs_dir)
        return optuna.load_study(study_name=study, storage=open_storage(url))
    except Exception as error:  # noqa: BLE001 - the report is still useful without the study plots
        from gptexp.redaction import redact

        stderr.print(f"[yellow]note:[/] study plots left out: {escape(redact(str(error)))}", highlight=False)
        return None


# Registered last so `gptexp --help` lists the everyday commands first.
register_sweep(app)
register_launch_file(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
