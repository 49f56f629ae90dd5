from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptexp.redaction import redact
from gptexp.tracking import (
    RunStore,
    RunStoreError,
    list_runs,
    new_run_id,
    pid_alive,
    run_dir_for,
    wandb_mode,
    write_json_atomic,
)


def make_run(runs: Path, run_id: str) -> RunStore:
    (runs / run_id).mkdir(parents=True)
    store = RunStore(runs / run_id)
    store.spec_path.write_text("name: x\n")
    return store


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b", "..", "", "  ", "名前", "x" * 300, "C:\\evil"])
def test_run_ids_are_safe_whatever_the_name(name: str) -> None:
    run_id = new_run_id(name)
    assert "/" not in run_id and "\\" not in run_id and ".." not in run_id
    assert len(run_id) <= 64 and run_id[0].isalnum()


def test_run_dir_for_refuses_to_leave_the_runs_dir(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "good-run")
    make_run(tmp_path, "outside")
    assert run_dir_for(runs, "good-run") == (runs / "good-run").resolve()
    for bad in ("../outside", "..", "/etc", "good-run/..", ".hidden"):
        with pytest.raises(RunStoreError):
            run_dir_for(runs, bad)
    with pytest.raises(RunStoreError, match="no such run"):
        run_dir_for(runs, "missing")


def test_status_crashed_when_its_processes_are_gone(tmp_path: Path) -> None:
    store = make_run(tmp_path, "r1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.write_status("running", launcher_pid=dead.pid, worker_pid=None)
    assert store.effective_status() == "crashed"
    store.write_status("running", launcher_pid=os.getpid())
    assert store.effective_status() == "running"
    store.write_status("completed")
    assert store.effective_status() == "completed"
    assert pid_alive(os.getpid()) and not pid_alive(dead.pid) and not pid_alive(None)


def test_status_errors_are_redacted(tmp_path: Path) -> None:
    store = make_run(tmp_path, "r1")
    store.write_status("failed", error="could not connect to postgresql+psycopg://bob:hunter2pw@db:5432/x")
    assert "hunter2pw" not in store.status_path.read_text()
    assert "bob:***@db" in store.read_status()["error"]
    assert redact("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"


def test_metrics_are_appended_line_by_line_and_truncated_on_resume(tmp_path: Path) -> None:
    store = make_run(tmp_path, "r1")
    for step in range(0, 50, 10):
        store.append_metrics({"step": step, "train/loss": 1.0 / (step + 1)})
    with open(store.metrics_path, "a") as f:
        f.write('{"step": 60, "train/lo')  # cut short by a crash
    assert [row["step"] for row in store.read_metrics()] == [0, 10, 20, 30, 40]
    store.truncate_metrics_after(20)
    assert [row["step"] for row in store.read_metrics()] == [0, 10, 20]


def test_atomic_json_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]


def test_list_runs_skips_the_cache_and_orders_by_creation(tmp_path: Path) -> None:
    make_run(tmp_path, "b-run")
    os.utime(tmp_path / "b-run" / "spec.yaml", (1, 1))
    make_run(tmp_path, "a-run")
    (tmp_path / ".cache").mkdir()
    (tmp_path / "not-a-run").mkdir()
    assert [r.run_id for r in list_runs(tmp_path)] == ["b-run", "a-run"]


def test_wandb_mode_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("online") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert wandb_mode("online") == "offline"


def test_disabled_tracking_never_imports_wandb_and_the_cli_never_imports_torch() -> None:
    code = ("import sys; import gptexp.cli, gptexp.launch, gptexp.tracking, gptexp.data; "
            "from gptexp.cli import app; "
            "print(sorted(m for m in ('torch', 'wandb', 'optuna', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
