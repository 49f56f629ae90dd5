"""The one place where a command's errors become an exit code and a one-line message.

Commands raise `CliError` (through `fail`) or let a domain error escape: a `SpecError` (bad spec
or flag), a `RunStoreError` (no such run, a malformed run file), a `TokenizerFileError` (a broken
tokenizer file) or an `UnknownFieldError` (a spec field path no run has) all mean bad input, exit 2. The command table wraps every command in
`exit_on_error`, which prints `error: <message>` on stderr (never a traceback) and exits with the
code. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from typing import Callable, NoReturn, ParamSpec, TypeVar

import typer
from rich.text import Text

from gptexp.cli.console import stderr
from gptexp.contract import EXIT_BAD_INPUT

P = ParamSpec("P")
R = TypeVar("R")


class CliError(Exception):
    """A failure the user can fix: shown as one line, exits with `code` (2 = bad input)."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Stop the command with one short message and exit `code` (default 2, bad input)."""
    raise CliError(message, code)


def exit_code_for(error: Exception) -> int | None:
    """The exit code of an error the user caused, or None for a bug (which keeps its traceback)."""
    if isinstance(error, CliError):
        return error.code
    # Imported here, when an error is being handled, so that importing the CLI stays cheap.
    from gptexp.report.compare import UnknownFieldError
    from gptexp.spec import SpecError
    from gptexp.tokenizers.base import TokenizerFileError
    from gptexp.tracking import RunStoreError

    if isinstance(error, (SpecError, RunStoreError, TokenizerFileError, UnknownFieldError)):
        return EXIT_BAD_INPUT
    return None


def print_error(message: str) -> None:
    """`error: message` in one line on stderr; the message is plain text, never rich markup, and
    never a password (an error may quote a storage URL or DSN)."""
    from gptexp.redaction import redact

    stderr.print(Text.assemble(("error: ", "bold red"), redact(message)), highlight=False, soft_wrap=True)


def exit_on_error(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that user errors print one line and exit with their code."""

    @functools.wraps(command)  # typer reads the wrapped signature through __wrapped__
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - sorted by exit_code_for; bugs are re-raised
            code = exit_code_for(error)
            if code is None:
                raise
            print_error(str(error))
            raise typer.Exit(code) from None

    return wrapper
