from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
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


def testlist_runs_skips_the_cache_and_orders_by_creation(tmp_path: Path) -> None:
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


# -- validated reads (issue 10) ---------------------------------------------------------------


def _good_run(runs: Path, name: str) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text("name: ok\n", encoding="utf-8")
    (run / "status.json").write_text('{"status": "completed", "step": 5}', encoding="utf-8")
    (run / "summary.json").write_text('{"val/bpb": 1.5, "steps": 5}', encoding="utf-8")
    return run


@pytest.mark.parametrize("file, content, expected", [
    ("status.json", "[1, 2]", "expected a JSON object"),
    ("status.json", '{"status": "weird"}', "'status' must be one of"),
    ("status.json", '{"status": "running", "step": "five"}', "'step' must be an integer"),
    ("status.json", '{"status": "running", "launcher_pid": true}', "'launcher_pid' must be an integer"),
    ("status.json", "{not json", "not valid JSON"),
    ("summary.json", '{"val/bpb": "low"}', "'val/bpb' must be a number or null"),
    ("summary.json", '"text"', "expected a JSON object"),
    ("spec.yaml", "[a, b]", "expected a mapping"),
    ("spec.yaml", "a: [", "not valid YAML"),
])
def test_a_malformed_run_is_skipped_and_named_not_fatal(tmp_path: Path, file: str, content: str, expected: str) -> None:
    runs = tmp_path / "runs"
    _good_run(runs, "good-1")
    bad = _good_run(runs, "bad-1")
    (bad / file).write_text(content, encoding="utf-8")
    skipped: list[tuple[str, str]] = []
    records = list_runs(runs, on_skip=lambda d, reason: skipped.append((d.name, reason)))
    assert [r.run_id for r in records] == ["good-1"]
    assert len(skipped) == 1 and skipped[0][0] == "bad-1" and expected in skipped[0][1]
    assert str(bad / file) in skipped[0][1] and "\n" not in skipped[0][1]


def test_fifos_and_devices_in_a_run_dir_are_refused_without_hanging(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fifo_run = _good_run(runs, "fifo")
    (fifo_run / "status.json").unlink()
    os.mkfifo(fifo_run / "status.json")
    zero_run = _good_run(runs, "zero")
    (zero_run / "summary.json").unlink()
    (zero_run / "summary.json").symlink_to("/dev/zero")
    big_run = _good_run(runs, "big")
    (big_run / "spec.yaml").write_text("name: x\n" + "#" * (2 << 20), encoding="utf-8")
    skipped: dict[str, str] = {}
    done = threading.Event()

    def scan() -> None:
        list_runs(runs, on_skip=lambda d, reason: skipped.__setitem__(d.name, reason))
        done.set()

    threading.Thread(target=scan, daemon=True).start()
    assert done.wait(20), "reading the runs dir hung on a FIFO or a device"
    assert "not a regular file" in skipped["fifo"] and "not a regular file" in skipped["zero"]
    assert "bytes" in skipped["big"]
    with pytest.raises(RunStoreError):
        RunStore(fifo_run).read_status()


def test_summary_is_strict_json_with_null_for_nan(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write_summary({"val/bpb": math.nan, "best/val/bpb": math.inf, "nested": {"x": -math.inf}, "steps": 3})
    text = store.summary_path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def strict(token: str) -> None:
        raise ValueError(token)

    data = json.loads(text, parse_constant=strict)  # a strict parser: NaN/Infinity would raise
    assert data == {"val/bpb": None, "best/val/bpb": None, "nested": {"x": None}, "steps": 3}
    store.append_metrics({"step": 1, "val/bpb": math.nan})
    assert json.loads(store.metrics_path.read_text(), parse_constant=strict) == {"step": 1, "val/bpb": None}
