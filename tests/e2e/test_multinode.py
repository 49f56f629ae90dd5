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
