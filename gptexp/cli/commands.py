"""Every `gptexp` command, in one table.

To add a command:
  1. write its function in the module of its group (gptexp/cli/<group>.py, or a new one): typer
     parameters with `Annotated[..., typer.Option(..., help=...)]`, a docstring that becomes its
     `--help`; import heavy packages (torch, wandb, optuna, matplotlib) inside the function, never
     at module level (`gptexp --help` must stay fast; tests/test_tracking.py checks it);
  2. take `runs_dir: RunsDir = DEFAULT_RUNS_DIR` (gptexp/cli/options.py) if it reads or writes runs;
  3. fail with `fail("one line")` (exit 2) or let a SpecError / RunStoreError / TokenizerFileError
     escape: gptexp/cli/errors.py turns them into one line and an exit code; print values from
     files or users as plain text (gptexp/cli/console.py), never as rich markup;
  4. add one `Command(...)` row below (a name with a space, "tokenizer train", goes in a group
     listed in GROUPS), and list the command with its flags in the README's command table
     (tests check that every listed flag is accepted).
Rows are shown by `gptexp --help` in this order.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable

import typer

from gptexp.cli import diff, evaluation, export, launch_file, report, run, runs, study, sweep, tokenizer
from gptexp.cli.errors import exit_on_error
from gptexp.contract import EXIT_SIGINT


@dataclass(frozen=True)
class Command:
    name: str  # "run", or "group command" for a command inside a group
    function: Callable[..., Any]
    no_args_is_help: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("run", run.run),
    Command("runs", runs.runs),
    Command("eval", evaluation.eval_command),
    Command("generate", evaluation.generate),
    Command("export", export.export),
    Command("report", report.report),
    Command("diff", diff.diff),
    Command("tokenizer train", tokenizer.train),
    Command("tokenizer export-hf", tokenizer.export_hf),
    Command("sweep", sweep.sweep, no_args_is_help=True),
    Command("study", study.study, no_args_is_help=True),
    Command("launch-file", launch_file.launch_file),
)

GROUPS: dict[str, str] = {
    "tokenizer": "Train a char or byte-level BPE tokenizer, or export one as a Hugging Face tokenizer.json.",
}


def build_app() -> typer.Typer:
    """The typer app holding every row of COMMANDS, each wrapped by errors.exit_on_error."""
    app = typer.Typer(
        name="gptexp",
        help="Experiments with small GPT-style language models: specs in YAML, torchrun DDP training, "
        "W&B tracking, Optuna sweeps and fair (bits-per-byte) reports.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    groups: dict[str, typer.Typer] = {}
    for command in COMMANDS:
        group_name, _, name = command.name.rpartition(" ")
        target = app
        if group_name:
            if group_name not in groups:
                groups[group_name] = typer.Typer(help=GROUPS[group_name], no_args_is_help=True, add_completion=False,
                                                 pretty_exceptions_enable=False)
                app.add_typer(groups[group_name], name=group_name, help=GROUPS[group_name])
            target = groups[group_name]
        target.command(name, no_args_is_help=command.no_args_is_help)(exit_on_error(command.function))
    return app


app = build_app()


def main() -> None:
    """The console script `gptexp`."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(EXIT_SIGINT)
