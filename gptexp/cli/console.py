"""The CLI's two consoles and the rule for printing values that came from files or users.

Values from a run file, a spec or a sweep (names, errors, parameters) may contain `[` and `]`:
rich would read them as markup (and crash on `[/oops]`). Print them as `rich.text.Text`, or with
`markup=False`, or through `rich.markup.escape`; never inside an f-string given to `print` with
markup on.
"""

from __future__ import annotations

from rich.console import Console

stdout = Console()
stderr = Console(stderr=True)


def note(message: str, style: str = "dim") -> None:
    """A progress or note line on stderr, styled as a whole; the text is never read as markup."""
    stderr.print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def wide_console(width: int = 200) -> Console:
    """stdout, or (for a pipe or file, which has no width to respect) a console that never cuts."""
    return stdout if stdout.is_terminal else Console(file=stdout.file, width=max(stdout.width, width), no_color=True)
