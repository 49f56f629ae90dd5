"""The CLI package's seams: the command table, the error -> exit-code place, the --runs-dir option."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gptexp.cli import COMMANDS, app
from gptexp.cli.errors import exit_on_error, fail
from gptexp.cli.options import RunsDir
from gptexp.spec import SpecError
from gptexp.tracking import RunStoreError

runner = CliRunner()


@pytest.mark.parametrize("name", [command.name for command in COMMANDS])
def test_every_row_of_the_table_is_a_command_with_help(name: str) -> None:
    result = runner.invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: gptexp " + name in " ".join(result.output.split())


def test_every_command_is_wrapped_by_the_error_handler() -> None:
    for command in COMMANDS:
        registered = [c for c in app.registered_commands if c.callback.__wrapped__ is command.function] + \
            [c for group in app.registered_groups for c in group.typer_instance.registered_commands
             if c.callback.__wrapped__ is command.function]
        assert len(registered) == 1, command.name


def test_commands_that_touch_runs_share_one_runs_dir_option() -> None:
    takes_runs_dir = {command.name for command in COMMANDS
                      if "runs_dir" in inspect.signature(command.function).parameters}
    assert takes_runs_dir == {"run", "runs", "eval", "generate", "export", "report", "diff", "sweep", "study"}
    for command in COMMANDS:
        parameter = inspect.signature(command.function).parameters.get("runs_dir")
        if parameter is not None:
            assert parameter.annotation in (RunsDir, "RunsDir"), command.name


def _app_raising(error: Exception) -> typer.Typer:
    probe = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @probe.command()
    @exit_on_error
    def go() -> None:
        raise error

    @probe.command()
    def other() -> None:  # a second command keeps `go` a subcommand
        pass

    return probe


@pytest.mark.parametrize("error,code", [
    (SpecError("train.lr: [/oops] must be positive"), 2),
    (RunStoreError("runs/x/status.json: [bold]not JSON[/bold]"), 2),
])
def test_user_errors_are_one_plain_line_and_exit_2(error: Exception, code: int) -> None:
    result = runner.invoke(_app_raising(error), ["go"])
    assert result.exit_code == code
    assert result.output.strip() == f"error: {error}"  # markup-looking text printed as it is
    assert "Traceback" not in result.output


def test_fail_carries_its_exit_code() -> None:
    probe = typer.Typer(add_completion=False)

    @probe.command()
    @exit_on_error
    def go() -> None:
        fail("no such run [x]", code=1)

    @probe.command()
    def other() -> None:
        pass

    result = runner.invoke(probe, ["go"])
    assert (result.exit_code, result.output.strip()) == (1, "error: no such run [x]")


def test_a_bug_keeps_its_traceback() -> None:
    result = runner.invoke(_app_raising(ZeroDivisionError("bug")), ["go"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_python_dash_m_runs_the_same_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "gptexp.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "launch-file" in done.stdout and "tokenizer" in done.stdout


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_commands() -> list[tuple[str, str]]:
    """(command name from the table, the whole first cell) for every row of the README's command table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    rows = []
    names = sorted((c.name for c in COMMANDS), key=len, reverse=True)
    for line in section.splitlines():
        match = re.match(r"\| `gptexp ((?:[^`]|\\\|)+)` \|", line)
        if match:
            cell = match.group(1)
            name = next((n for n in names if cell == n or cell.startswith(n + " ")), None)
            assert name is not None, f"README names a command gptexp does not have: {cell}"
            rows.append((name, cell))
    return rows


def _click_command(name: str):
    import typer.main

    command = typer.main.get_command(app)
    for part in name.split():
        command = command.commands[part]
    return command


def test_every_flag_in_the_readme_command_table_is_accepted() -> None:
    rows = _readme_commands()
    assert {name for name, _ in rows} == {c.name for c in COMMANDS}, "every command has a row in the README"
    for name, cell in rows:
        accepted = {opt for param in _click_command(name).params for opt in (*param.opts, *param.secondary_opts)}
        claimed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cell))
        assert claimed <= accepted, f"gptexp {name}: README lists {sorted(claimed - accepted)}, not accepted"


def test_the_readme_names_exactly_the_commands_that_take_runs_dir() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    match = re.search(r"The commands that read or write runs take `--runs-dir D`[^:]*: (.*?)\. `tokenizer`", text)
    assert match, "the README's sentence about --runs-dir"
    claimed = set(re.findall(r"`([a-z-]+)`", match.group(1)))
    taking = {c.name for c in COMMANDS if "--runs-dir" in
              {opt for p in _click_command(c.name).params for opt in p.opts}}
    assert claimed == taking
