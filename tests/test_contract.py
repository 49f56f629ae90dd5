"""The one status → exit-code mapping that trainer, launcher and sweep share."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

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


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string constant of a module but its docstrings (f-string pieces included), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_metric_names_are_spelled_once() -> None:
    """A metric name as a string literal (not in prose: docstrings, comments and longer text pass)
    appears only where it is defined: contract.py, and scoring.py for the study's scoring family."""
    from gptexp import scoring

    owners = {name: "contract.py" for name in (C.VAL_BPB, C.VAL_LOSS, C.VAL_ACC, C.TRAIN_LOSS, C.TOKENS_PER_SEC)}
    for family in (scoring.METRIC_PREFIX, scoring.LOSS_NAME, scoring.EXACT_NAME):
        owners.update({name: "scoring.py" for name in family.values() if name not in owners})
    package = Path(C.__file__).parent
    found = [f"{path.relative_to(package.parent)}:{line}: {value!r} (defined in gptexp/{owners[value]})"
             for path in sorted(package.rglob("*.py"))
             for line, value in _string_constants(path)
             if value in owners and path != package / owners[value]]
    assert not found, "\n".join(found)


def test_the_sweep_metrics_are_the_contracts() -> None:
    from typing import get_args

    from gptexp.sweep.spec import SweepMetric

    assert set(get_args(SweepMetric)) == set(C.VAL_METRICS)
