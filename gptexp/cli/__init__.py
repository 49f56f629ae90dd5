"""The `gptexp` command line: the table of commands is gptexp/cli/commands.py.

Modules: commands (the table and the app), errors (errors -> exit codes and one-line messages),
options (--runs-dir, RUN lookup), console (printing values safely), and one module per command
group (run, runs, evaluation, report, sweep, launch_file, tokenizer). Exit codes (DESIGN.md): 0
success, 1 the run failed, 2 bad input, 3 pruned, 130/143 interrupted. Heavy imports happen inside
the commands that need them, so `gptexp --help` and `gptexp runs` stay fast.
"""

from gptexp.cli.commands import COMMANDS, app, main

__all__ = ["COMMANDS", "app", "main"]
