"""`gptexp run` end to end: real torchrun, real gloo, real W&B offline files, real signals."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT, processes_matching, run_cli, start_cli, wait_for
from tests.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow


def only_run(runs_dir: Path) -> Path:
    runs = [d for d in runs_dir.iterdir() if not d.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def test_clm_char_two_ranks_end_to_end_with_wandb_offline(runs_dir: Path) -> None:
    secret = "wandb-secret-key-do-not-log-0123456789"
    result = run_cli(
        ["run", "experiments/clm_char.yaml", "--nproc", "2", "--runs-dir", str(runs_dir),
         "--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
         "--set", "model.block_size=32", "--set", "train.batch_size=8", "--set", "train.max_steps=40",
         "--set", "train.eval_every=20", "--set", "train.eval_batches=4", "--set", "train.log_every=10",
         "--set", "optim.warmup_steps=5", "--set", "tracking.wandb.group=e2e", "--set", "tracking.wandb.tags=[smoke]"],
        env={"WANDB_API_KEY": secret, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = only_run(runs_dir)
    assert f"run directory: {run_dir}" in result.stdout
    assert "wandb sync" in result.stdout

    assert status_of(run_dir)["status"] == "completed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 40
    assert summary["tokens_seen"] == 40 * 8 * 32 * 2
    assert summary["parameters"] > 0 and summary["tokens_per_sec"] > 0
    assert summary["versions"]["torch"] == torch.__version__

    rows = read_jsonl(run_dir / "metrics.jsonl")
    evals = [row for row in rows if "val/bpb" in row]
    assert [row["step"] for row in evals] == [0, 20, 40]
    assert evals[-1]["val/bpb"] < evals[0]["val/bpb"] - 0.5  # it learns
    assert math.isclose(summary["val/bpb"], evals[-1]["val/bpb"])
    assert [row["step"] for row in rows if "train/loss" in row] == [10, 20, 30, 40]

    # The W&B offline run: same id, same config, and the same history as metrics.jsonl.
    wandb_files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_files) == 1
    offline = read_offline_run(wandb_files[0])
    assert offline.run_id == run_dir.name
    assert offline.group == "e2e" and offline.tags == ["smoke"]
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert offline.config["model"] == spec["model"] and offline.config["train"] == spec["train"]
    expected: dict[int, dict] = {}
    for row in rows:
        expected.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k not in ("step", "time")})
    logged = {row["_step"]: {k: v for k, v in row.items() if not k.startswith("_")} for row in offline.history}
    assert logged == expected
    # W&B's summary says what summary.json says (not the last logged tokens/s of one interval).
    for key in ("tokens_per_sec", "val/bpb", "best/val/bpb", "wall_time_s", "train_time_s", "steps"):
        assert offline.summary.get(key) == summary[key], key

    # No secret anywhere in the run directory (W&B's own files included).
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def _tiny_args(spec: Path, runs_dir: Path, name: str, *extra: str) -> list[str]:
    return ["run", str(spec), "--nproc", "2", "--name", name, "--runs-dir", str(runs_dir), *extra]


def _final_val_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text())["val/loss"]


def test_resume_after_sigkill_matches_uninterrupted_run(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 160, "checkpoint_every": 20, "eval_every": 40})
    full = run_cli(_tiny_args(spec, runs_dir, "full"))
    assert full.returncode == 0, full.stdout
    full_dir = next(runs_dir.glob("full-*"))

    # Kill everything with SIGKILL, as the OOM killer or a power cut would: launcher, torchrun, workers.
    process = start_cli(_tiny_args(spec, runs_dir, "killed"))
    wait_for(lambda: any(runs_dir.glob("killed-*/checkpoints/last.pt")), 120, "a first checkpoint")
    killed_dir = next(runs_dir.glob("killed-*"))
    wait_for(lambda: status_of(killed_dir).get("checkpoint_step", 0) >= 40, 120, "the checkpoint at step 40")
    for pid in [process.pid, *processes_matching(str(killed_dir))]:
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    wait_for(lambda: not processes_matching(str(killed_dir)), 10, "workers to be gone")
    status = status_of(killed_dir)
    assert status["status"] == "running" and status["step"] < 160  # left behind as a crash leaves it

    listed = run_cli(["runs", "--json", "--runs-dir", str(runs_dir)])
    states = {row["id"]: row["status"] for row in json.loads(listed.stdout)}
    assert states[killed_dir.name] == "crashed"

    resumed = run_cli(["run", "--resume", killed_dir.name, "--runs-dir", str(runs_dir)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert status_of(killed_dir)["status"] == "completed"
    full_loss, resumed_loss = _final_val_loss(full_dir), _final_val_loss(killed_dir)
    assert abs(resumed_loss - full_loss) / full_loss < 1e-4, (resumed_loss, full_loss)
    # The resumed history has each eval once, like the uninterrupted one.
    eval_steps = [row["step"] for row in read_jsonl(killed_dir / "metrics.jsonl") if "val/loss" in row]
    assert eval_steps == [0, 40, 80, 120, 160]


def test_sigterm_checkpoints_marks_interrupted_and_resumes(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 100000, "checkpoint_every": 1000})
    process = start_cli(_tiny_args(spec, runs_dir, "term"))
    wait_for(lambda: any(runs_dir.glob("term-*/metrics.jsonl")) and
             status_of(next(runs_dir.glob("term-*"))).get("step", 0) >= 20, 120, "training to start")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 143, output
    run_dir = next(runs_dir.glob("term-*"))
    status = status_of(run_dir)
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    assert "resume with:   gptexp run --resume" in output
    assert "Traceback" not in output and "SignalException" not in output, output
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == status["step"] >= 20
    assert not processes_matching(str(run_dir))

    # Resume with a smaller budget: the run continues from its checkpoint to completion.
    spec_path = run_dir / "spec.yaml"
    resolved = yaml.safe_load(spec_path.read_text())
    resolved["train"]["max_steps"] = checkpoint["step"] + 10
    spec_path.write_text(yaml.safe_dump(resolved))
    resumed = run_cli(["run", "--resume", str(run_dir), "--runs-dir", str(runs_dir)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == checkpoint["step"] + 10
    # Wall and train time cover both segments: the first (up to its checkpoint) plus the second.
    first = checkpoint["counters"]
    assert summary["train_time_s"] > first["train_time_s"]
    assert summary["wall_time_s"] >= first["wall_time_s"] + (summary["train_time_s"] - first["train_time_s"])
    launches = [json.loads(line) for line in (run_dir / "launches.jsonl").read_text().splitlines()]
    assert [entry["resume"] for entry in launches] == [False, True]
    assert launches[1]["argv"][1:3] == ["run", "--resume"] and launches[1]["overrides"] is None


def test_workers_stop_when_the_launcher_is_killed(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 100000, "checkpoint_every": 1000})
    process = start_cli(_tiny_args(spec, runs_dir, "orphan"))
    wait_for(lambda: any(runs_dir.glob("orphan-*/metrics.jsonl")), 120, "training to start")
    run_dir = next(runs_dir.glob("orphan-*"))
    process.kill()
    process.wait(timeout=10)
    wait_for(lambda: not processes_matching(str(run_dir)), 20, "workers to notice and stop")
    status = status_of(run_dir)
    assert status["status"] == "interrupted" and status["signal"] == "launcher gone"
    assert (run_dir / "checkpoints" / "last.pt").exists()


def test_clm_char_experiment_is_what_the_readme_runs() -> None:
    spec = yaml.safe_load((REPO_ROOT / "experiments" / "clm_char.yaml").read_text())
    assert spec["tokenizer"]["kind"] == "char" and spec["objective"]["kind"] == "clm"
    assert spec["tracking"]["wandb"]["mode"] == "offline"


def test_a_terminal_gets_a_progress_bar(runs_dir: Path, tiny_spec) -> None:
    """On a terminal (a pty here) rank 0 draws a rich progress bar; in pipes it prints plain lines."""
    import pty
    import subprocess

    from tests.conftest import gptexp_command

    spec = tiny_spec(train={"max_steps": 30, "eval_every": 30})
    main_fd, worker_fd = pty.openpty()
    process = subprocess.Popen(gptexp_command() + ["run", str(spec), "--nproc", "1", "--runs-dir", str(runs_dir)],
                               stdin=worker_fd, stdout=worker_fd, stderr=worker_fd, cwd=REPO_ROOT,
                               env={**os.environ, "COLUMNS": "120", "TERM": "xterm"})
    os.close(worker_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the pty closes when the last writer exits
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=120)
    os.close(main_fd)
    screen = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, screen
    assert "━" in screen and "tok/s" in screen and "30/30" in screen  # the bar, its fields, the end
    assert "step 30/30 | loss" not in screen  # not the plain log lines


def test_ctrl_c_checkpoints_and_exits_130(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 100000, "checkpoint_every": 1000})
    process = start_cli(_tiny_args(spec, runs_dir, "ctrlc", "--set", "train.eval_every=5"))
    wait_for(lambda: any(runs_dir.glob("ctrlc-*/metrics.jsonl")) and
             status_of(next(runs_dir.glob("ctrlc-*"))).get("step", 0) >= 10, 120, "training to start")
    process.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    run_dir = next(runs_dir.glob("ctrlc-*"))
    status = status_of(run_dir)
    assert status["status"] == "interrupted" and status["signal"] == "SIGINT"
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == status["step"]

    # The console: one line per eval with val/bpb, no third-party noise, no traceback from any process.
    evals = [line for line in output.splitlines() if line.startswith("eval step ")]
    assert len(evals) >= 2 and all("val/bpb" in line and "best val/bpb" in line for line in evals), output
    for noise in ("Traceback", "FutureWarning", "OMP_NUM_THREADS", "SignalException", "wandb:"):
        assert noise not in output, (noise, output)
    assert f"run {run_dir.name} interrupted (exit 130)" in output
    assert f"resume with:   gptexp run --resume {run_dir.name}" in output
    # The run keeps its console and its launch record.
    log = (run_dir / "output.log").read_text()
    assert evals[0] in log and "interrupted (exit 130)" in log
    (launch,) = [json.loads(line) for line in (run_dir / "launches.jsonl").read_text().splitlines()]
    assert launch["argv"][1:] == _tiny_args(spec, runs_dir, "ctrlc", "--set", "train.eval_every=5")
    assert launch["overrides"] == ["train.eval_every=5"] and launch["resume"] is False
    assert launch["host"] and launch["torch"] == torch.__version__ and launch["python"]


def test_wandb_disabled_never_imports_wandb_in_the_workers(runs_dir: Path, tiny_spec, tmp_path: Path) -> None:
    poisoned = tmp_path / "poison" / "wandb"
    poisoned.mkdir(parents=True)
    (poisoned / "__init__.py").write_text("raise ImportError('wandb was imported although tracking is disabled')\n")
    spec = tiny_spec(train={"max_steps": 5, "eval_every": 5})
    result = run_cli(["run", str(spec), "--nproc", "1", "--runs-dir", str(runs_dir)],
                     env={"PYTHONPATH": str(poisoned.parent), "WANDB_MODE": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [d for d in runs_dir.iterdir() if not d.name.startswith(".")]
    assert status_of(run_dir)["status"] == "completed" and not (run_dir / "wandb").exists()
