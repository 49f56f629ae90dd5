"""Two `gptexp run` processes as two nodes of one job (c10d rendezvous on 127.0.0.1)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli, start_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_form_one_job_that_matches_a_single_node_run(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 40, "eval_every": 20})
    env = {"OMP_NUM_THREADS": "1"}  # two single-rank nodes share this machine's 2 cores
    endpoint = f"127.0.0.1:{free_port()}"
    node_args = ["run", str(spec), "--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint,
                 "--run-id", "two-nodes", "--runs-dir", str(runs_dir)]
    nodes = [start_cli(node_args, env=env) for _ in range(2)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs

    run_dir = runs_dir / "two-nodes"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    multi = json.loads((run_dir / "summary.json").read_text())
    assert multi["world_size"] == 2
    # Rank 0 alone wrote the run store: one eval row per eval step, not one per node.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "val/loss" in row] == [0, 20, 40]

    single = run_cli(["run", str(spec), "--nproc", "2", "--name", "single", "--runs-dir", str(runs_dir)], env=env)
    assert single.returncode == 0, single.stdout + single.stderr
    single_summary = json.loads(next(runs_dir.glob("single-*/summary.json")).read_text())
    assert abs(multi["val/loss"] - single_summary["val/loss"]) / single_summary["val/loss"] < 1e-4


def _node_args(spec: Path, runs_dir: Path, endpoint: str, run_id: str | None) -> list[str]:
    args = ["run", str(spec), "--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint, "--runs-dir", str(runs_dir)]
    return args + (["--run-id", run_id] if run_id else [])


def test_a_requeued_two_node_job_continues_from_its_checkpoint(runs_dir: Path, tiny_spec) -> None:
    import os
    import signal

    from tests.conftest import processes_matching, wait_for

    spec = tiny_spec(train={"max_steps": 40, "eval_every": 20, "checkpoint_every": 5})
    env = {"OMP_NUM_THREADS": "1"}
    endpoint = f"127.0.0.1:{free_port()}"
    run_dir = runs_dir / "requeued"
    # The job is killed (SIGKILL, as a preempted allocation is) after a checkpoint.
    nodes = [start_cli(_node_args(spec, runs_dir, endpoint, "requeued"), env=env) for _ in range(2)]
    wait_for(lambda: json.loads((run_dir / "status.json").read_text()).get("checkpoint_step", 0) >= 10
             if (run_dir / "status.json").exists() else False, 180, "a checkpoint at step 10")
    for pid in [node.pid for node in nodes] + processes_matching(str(run_dir)):
        os.kill(pid, signal.SIGKILL)
    for node in nodes:
        node.wait(timeout=10)
    wait_for(lambda: not processes_matching(str(run_dir)), 20, "every process of the job to be gone")
    killed_at = json.loads((run_dir / "status.json").read_text())["step"]
    assert killed_at < 40

    # The requeued job runs the same two commands again (the same endpoint, as a Slurm requeue does).
    nodes = [start_cli(_node_args(spec, runs_dir, endpoint, "requeued"), env=env) for _ in range(2)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert any("continuing from its last checkpoint" in output for output in outputs), outputs
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "val/loss" in row] == [0, 20, 40]  # never restarted from 0

    single = run_cli(["run", str(spec), "--nproc", "2", "--name", "single", "--runs-dir", str(runs_dir)], env=env)
    assert single.returncode == 0, single.stdout + single.stderr
    single_loss = json.loads(next(runs_dir.glob("single-*/summary.json")).read_text())["val/loss"]
    requeued_loss = json.loads((run_dir / "summary.json").read_text())["val/loss"]
    assert abs(requeued_loss - single_loss) / single_loss < 1e-4, (requeued_loss, single_loss)

    # A job requeued once more after the run completed refuses at once, on every node.
    again = run_cli(_node_args(spec, runs_dir, endpoint, "requeued"), env=env, timeout=60)
    assert again.returncode == 2 and "already completed" in again.stderr, again.stdout + again.stderr


def test_multi_node_without_run_id_exits_2_and_a_lonely_node_gives_up(runs_dir: Path, tiny_spec) -> None:
    import time

    spec = tiny_spec()
    endpoint = f"127.0.0.1:{free_port()}"
    no_id = run_cli(_node_args(spec, runs_dir, endpoint, None), timeout=60)
    assert no_id.returncode == 2 and "needs --run-id" in no_id.stderr
    assert not [d for d in runs_dir.iterdir() if not d.name.startswith(".")]

    started = time.monotonic()
    lonely = run_cli(_node_args(spec, runs_dir, endpoint, "lonely"), env={"GPTEXP_RDZV_TIMEOUT": "3"}, timeout=120)
    assert lonely.returncode == 1 and time.monotonic() - started < 90
    assert "rendezvous did not form within 3 s" in lonely.stderr
    status = json.loads((runs_dir / "lonely" / "status.json").read_text())
    assert status["status"] == "failed" and "rendezvous" in status["error"]
