"""The one status → exit-code mapping that trainer, launcher and sweep share."""

from __future__ import annotations

import signal

from gptexp import contract as C


def test_status_to_exit_code() -> None:
    assert C.exit_code_for_status(C.COMPLETED) == 0
    assert C.exit_code_for_status(C.FAILED) == 1
    assert C.exit_code_for_status(C.CRASHED) == 1
    assert C.exit_code_for_status(C.PRUNED) == 3
    # 128 + the signal number, the shell's convention; SIGTERM is 143 everywhere (the trainer said 130).
    assert C.exit_code_for_status(C.INTERRUPTED, C.SIGINT_NAME) == 128 + signal.SIGINT == C.EXIT_SIGINT
    assert C.exit_code_for_status(C.INTERRUPTED, C.SIGTERM_NAME) == 128 + signal.SIGTERM == C.EXIT_SIGTERM
    assert C.exit_code_for_status(C.INTERRUPTED, "launcher gone") == C.EXIT_SIGTERM


def test_the_launcher_and_trainer_use_the_contract() -> None:
    from gptexp import launch, train

    assert launch.EXIT_SIGTERM is C.EXIT_SIGTERM and launch.EXIT_BAD_INPUT == 2
    assert train.C is C


def test_names_are_unique() -> None:
    env = [value for name, value in vars(C).items() if name.startswith("ENV_")]
    assert len(env) == len(set(env)) and all(value.startswith("GPTEXP_") for value in env)
    assert len(C.RUN_STATUSES) == len(set(C.RUN_STATUSES))
