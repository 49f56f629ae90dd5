"""`gptexp run`: validate a spec (or find the run to resume), launch torchrun, print the outcome."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.text import Text

from gptexp.cli.console import note, stdout
from gptexp.cli.errors import fail, print_error
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir, writable_runs_dir

if TYPE_CHECKING:
    from gptexp.launch import LaunchResult
    from gptexp.spec import ExperimentSpec


def run(
    spec_path: Annotated[Optional[Path], typer.Argument(metavar="SPEC", help="experiment spec (YAML)", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override a spec field: --set train.max_steps=100 (value parsed as YAML); repeatable")] = None,
    nproc: Annotated[Optional[int], typer.Option("--nproc", min=1, help="processes (DDP ranks) on this node; overrides launch.nproc")] = None,
    nnodes: Annotated[Optional[int], typer.Option("--nnodes", min=1, help="nodes of a multi-node run (start the same command on each)")] = None,
    rdzv_endpoint: Annotated[Optional[str], typer.Option("--rdzv-endpoint", help="HOST:PORT of the c10d rendezvous (multi-node)")] = None,
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="run id shared by every node of a multi-node run")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="human name of the run (the run id is derived from it)")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="RUN", help="continue a stopped or crashed run (id or directory)")] = None,
    force: Annotated[bool, typer.Option("--force", help="with --resume: resume although status.json says another host runs it (that host cannot be checked from here); never overrides a live lock")] = False,
    accept_corpus_change: Annotated[bool, typer.Option("--accept-corpus-change", help="continue a run (--resume, or a requeued multi-node job) although data.path changed since it started; refused if the tokenizer would change")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Validate SPEC, launch a torchrun job that trains it, and print the run directory.

    Exit codes: 0 completed, 1 failed, 2 bad input (also: the run is in use by another process, or
    already completed), 3 pruned (sweeps), 130/143 interrupted (a checkpoint was written; continue
    with `gptexp run --resume RUN`). A multi-node run needs --run-id; running the same command
    again (a requeued job) continues that run from its last checkpoint.
    """
    from gptexp import launch

    checked_runs_dir(runs_dir)
    if resume is not None:
        if spec_path is not None or overrides or name:
            fail("--resume RUN continues a run as it was: give no SPEC, --set or --name with it")
        writable_runs_dir(runs_dir)
        result = launch.resume_run(runs_dir, resume, progress=note, force=force,
                                   accept_corpus_change=accept_corpus_change)
    else:
        if force:
            fail("--force goes with --resume RUN")
        if spec_path is None:
            fail("missing SPEC (a YAML experiment spec), or --resume RUN")
        spec = _load_spec_with_flags(spec_path, overrides or [], nproc, nnodes, rdzv_endpoint, run_id, name)
        if spec.launch.run_id is not None:
            _check_run_id(spec.launch.run_id)
        writable_runs_dir(runs_dir)  # after the spec: bad input creates no directory
        result = launch.start_run(spec, runs_dir, progress=note, accept_corpus_change=accept_corpus_change,
                                  overrides=list(overrides or []))
    _print_outcome(result)
    raise typer.Exit(result.exit_code)


def _load_spec_with_flags(spec_path: Path, overrides: list[str], nproc: int | None, nnodes: int | None,
                          rdzv_endpoint: str | None, run_id: str | None, name: str | None) -> ExperimentSpec:
    from gptexp.spec import load_spec

    flag_overrides = [f"{key}={value}" for key, value in (("launch.nproc", nproc), ("launch.nnodes", nnodes))
                      if value is not None]
    spec = load_spec(spec_path, list(overrides) + flag_overrides)
    # Strings are assigned, not parsed as YAML, so a name like "123" or "yes" stays a string.
    if name is not None:
        if not name.strip():
            fail("--name: must not be empty")
        spec.name = name
    if rdzv_endpoint is not None:
        spec.launch.rdzv_endpoint = rdzv_endpoint
    if run_id is not None:
        spec.launch.run_id = run_id
    return spec


def _check_run_id(run_id: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", run_id):
        fail(f"--run-id {run_id!r}: use 1-64 letters, digits, '-' or '_' (it names a directory)")


def _final_metrics(run_dir: Path) -> str | None:
    """`final val/bpb 1.9310 | best val/bpb 1.9262 (step 400)`, from summary.json when the run wrote one."""
    from gptexp import contract as C
    from gptexp.tracking import RunStore, RunStoreError

    try:
        summary = RunStore(run_dir).read_summary()
    except RunStoreError:
        return None
    final, best = summary.get(C.VAL_BPB), summary.get(C.SUMMARY_BEST_BPB)
    if not isinstance(final, (int, float)):
        return None
    line = f"final val/bpb {final:.4f}"
    if isinstance(best, (int, float)):
        line += f" | best val/bpb {best:.4f} (step {summary.get(C.SUMMARY_BEST_STEP)})"
    return line


def _print_outcome(result: LaunchResult) -> None:
    """The outcome, the numbers that matter and what to do next; the same lines end output.log."""
    from gptexp.contract import INTERRUPTED, OUTPUT_LOG

    status_colour = {"completed": "green", "pruned": "yellow", "interrupted": "yellow"}.get(result.status, "red")
    headline = Text.assemble("run ", (result.run_id, "bold"), " ", (result.status, status_colour),
                             f" (exit {result.exit_code})")
    lines = [_final_metrics(result.run_dir), f"run directory: {result.run_dir}"]
    if sorted((result.run_dir / "wandb").glob("offline-run-*")):
        lines.append(f"sync to W&B:   wandb sync {result.run_dir / 'wandb'}/offline-run-*")
    if result.status == INTERRUPTED:
        lines.append(f"resume with:   gptexp run --resume {result.run_id}")
    lines = [line for line in lines if line]
    stdout.print(headline, highlight=False)
    for line in lines:
        stdout.print(line, highlight=False, markup=False, soft_wrap=True)
    try:
        with open(result.run_dir / OUTPUT_LOG, "a", encoding="utf-8") as log:
            log.write("\n".join([headline.plain, *lines, *([f"error: {result.error}"] if result.error else [])]) + "\n")
    except OSError:
        pass  # the run's own files already hold its outcome
    if result.status == "failed" and result.error:
        print_error(result.error)
