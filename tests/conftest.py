"""Shared fixtures: the repository root, a tiny spec, a shared data cache and a CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPUS = REPO_ROOT / "data" / "tinyshakespeare.txt"

# Small enough that a 2-rank torchrun job trains 60 steps in a few seconds on 2 cores.
TINY_SPEC = {
    "name": "tiny",
    "seed": 1234,
    "data": {"path": str(CORPUS), "val_fraction": 0.1},
    "tokenizer": {"kind": "char"},
    "model": {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "dropout": 0.1},
    "optim": {"lr": 3.0e-3, "warmup_steps": 5},
    "train": {"batch_size": 8, "max_steps": 60, "eval_every": 20, "eval_batches": 2, "checkpoint_every": 10, "log_every": 5},
    "tracking": {"wandb": {"mode": "disabled"}},
}


def services_required() -> bool:
    return os.environ.get("GPTEXP_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is missing, unless CI said the services must be there."""
    if services_required():
        pytest.fail(f"GPTEXP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer/encoding cache for the whole session (runs dirs link to it)."""
    return tmp_path_factory.mktemp("gptexp-cache")


@pytest.fixture
def runs_dir(tmp_path: Path, shared_cache: Path) -> Path:
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / ".cache").symlink_to(shared_cache, target_is_directory=True)
    return runs


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write TINY_SPEC with nested updates to a YAML file; returns its path."""

    def write(**sections: dict) -> Path:
        spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key].update(value)
            else:
                spec[key] = value
        path = tmp_path / f"spec-{len(list(tmp_path.glob('spec-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        return path

    return write


def gptexp_command() -> list[str]:
    """The installed console script, as a user runs it (falls back to the module)."""
    script = shutil.which("gptexp")
    return [script] if script else [sys.executable, "-m", "gptexp.cli"]


def run_cli(args: list[str], cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(gptexp_command() + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.Popen(gptexp_command() + args, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def processes_matching(text: str) -> list[int]:
    """PIDs whose command line contains `text` (reads /proc; Linux only)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
