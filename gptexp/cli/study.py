"""`gptexp study`: run a study file end to end (resumable), or show where a study stands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, checked_runs_dir


def study(
    target: Annotated[str, typer.Argument(metavar="STUDY.yaml | status", help="a study file, or 'status'")],
    name: Annotated[Optional[str], typer.Argument(metavar="[NAME]", help="with 'status': the study's name")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Run a study: tune each arm on a dev slice, train every seed, score all on one frozen evaluation set.

    `gptexp study STUDY.yaml` writes <runs dir>/studies/<name>/ (results.json, report.md, report.html, plots); its runs live in the runs directory like any other run. Stop it at any point (Ctrl-C, kill) and run the same command again: it continues where it stopped.

    `gptexp study status NAME` lists every tuning run, final run and score with its state.
    """
    runs_dir = checked_runs_dir(runs_dir)
    from gptexp.study.runner import StudyFailed, StudyInterrupted, StudyRunner, study_status
    from gptexp.study.spec import load_study

    if target == "status" and name is not None:
        for what, state in study_status(runs_dir, name):
            print(f"{what:<64} {state}")
        return
    if name is not None:
        fail(f"unexpected argument {name!r}: use `gptexp study STUDY.yaml` or `gptexp study status NAME`")
    if not Path(target).exists() and target == "status":
        fail("gptexp study status NAME: give the study's name")
    try:
        StudyRunner(load_study(target), runs_dir).run()
    except StudyInterrupted as stop:
        fail("study interrupted; run the same command again to continue", code=stop.exit_code)
    except StudyFailed as error:
        fail(str(error), code=1)
