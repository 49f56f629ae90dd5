"""The run directory as a contract under hostile conditions, with real processes (issue 10).

Concurrent launchers of one run, signals during data preparation, SIGKILL around checkpoint
writes, a full disk, broken checkpoints and tokenizers, a changed corpus, an owner on another host.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import CORPUS, gptexp_command, processes_matching, run_cli, start_cli, wait_for

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def status_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def eval_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "val/loss" in row]


# A tiny model trains a step in milliseconds: a run could finish before a SIGTERM sent at its
# first checkpoint lands. Evaluating every step paces it (tens of ms a step, on any machine
# proportionally), so the signal always arrives mid-run.
PACED = {"eval_every": 1, "eval_batches": 20}


def interrupted_run(runs_dir: Path, tiny_spec, name: str, max_steps: int = 60, **train: int) -> Path:
    """A real run stopped by SIGTERM after its first checkpoint (status interrupted)."""
    spec = tiny_spec(train={"max_steps": max_steps, "checkpoint_every": 5, **PACED, **train})
    process = start_cli(["run", str(spec), "--nproc", "1", "--name", name, "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    wait_for(lambda: any(runs_dir.glob(f"{name}-*/checkpoints/last.pt")), 120, "a first checkpoint")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    run_dir = next(runs_dir.glob(f"{name}-*"))
    assert process.returncode == 143 and status_of(run_dir)["status"] == "interrupted", output
    return run_dir


def test_two_concurrent_resumes_one_trains_the_other_exits_2(runs_dir: Path, tiny_spec) -> None:
    run_dir = interrupted_run(runs_dir, tiny_spec, "twice")
    args = ["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)]
    first, second = start_cli(args, env=ONE_THREAD), start_cli(args, env=ONE_THREAD)
    outputs = [p.communicate(timeout=180)[0] for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], outputs
    refused = outputs[[first.returncode, second.returncode].index(2)]
    winner = first if first.returncode == 0 else second
    assert f"run {run_dir.name} is in use by pid {winner.pid} on host {socket.gethostname()}" in refused
    assert "Traceback" not in refused and len(refused.strip().splitlines()) == 1
    assert status_of(run_dir)["status"] == "completed"
    assert eval_steps(run_dir) == list(range(61))  # one writer: each eval (every step) logged once


def test_a_second_launch_of_a_running_run_is_refused_at_once(runs_dir: Path, tiny_spec) -> None:
    spec = tiny_spec(train={"max_steps": 100000, "checkpoint_every": 1000})
    process = start_cli(["run", str(spec), "--nproc", "1", "--name", "busy", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    try:
        wait_for(lambda: any(runs_dir.glob("busy-*/metrics.jsonl")), 120, "training to start")
        run_dir = next(runs_dir.glob("busy-*"))
        started = time.monotonic()
        again = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)])
        assert again.returncode == 2 and time.monotonic() - started < 20
        assert f"is in use by pid {process.pid}" in again.stderr
        listed = json.loads(run_cli(["runs", "--json", "--runs-dir", str(runs_dir)]).stdout)
        assert [row["status"] for row in listed] == ["running"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def test_sigterm_during_data_preparation_leaves_interrupted(runs_dir: Path, tiny_spec, tmp_path: Path) -> None:
    # A fresh cache and a BPE tokenizer to train: preparation takes long enough to be hit.
    fresh_runs = tmp_path / "fresh-runs"
    spec = tiny_spec(tokenizer={"kind": "bpe", "vocab_size": 2048})
    process = subprocess.Popen([*gptexp_command(), "run", str(spec), "--nproc", "1",
                                "--name", "prep", "--runs-dir", str(fresh_runs)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **ONE_THREAD})
    for line in process.stdout:
        if "bpe" in line.lower():  # the launcher is counting or learning the tokenizer
            break
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 143, output
    run_dir = next(fresh_runs.glob("prep-*"))
    status = status_of(run_dir)
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM", status
    assert "preparing data" in status["error"]
    assert "Traceback" not in output


def test_sigkill_during_checkpoint_writes_then_resume_cleans_temp_files(runs_dir: Path, tiny_spec) -> None:
    # A checkpoint every step, killed over and over: some kills land inside a save.
    spec = tiny_spec(model={"n_embd": 64, "n_head": 4}, train={"max_steps": 20, "checkpoint_every": 1, "eval_every": 10})
    process = start_cli(["run", str(spec), "--nproc", "1", "--name", "kill", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    wait_for(lambda: any(runs_dir.glob("kill-*/checkpoints/last.pt")), 120, "a first checkpoint")
    run_dir = next(runs_dir.glob("kill-*"))
    wait_for(lambda: status_of(run_dir).get("checkpoint_step", 0) >= 3, 60, "a few checkpoints")
    for pid in [process.pid, *processes_matching(str(run_dir))]:
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=10)
    wait_for(lambda: not processes_matching(str(run_dir)), 10, "every process to be gone")
    checkpoints = run_dir / "checkpoints"
    # What a kill inside torch.save leaves (planted too, so the test never depends on timing).
    (checkpoints / ".last.pt.999999.tmp").write_bytes(os.urandom(4096))
    step_before = torch.load(checkpoints / "last.pt", weights_only=True)["step"]
    resumed = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]
    assert torch.load(checkpoints / "last.pt", weights_only=True)["step"] == 20 > step_before


def test_a_full_disk_ends_failed_with_the_error(runs_dir: Path, tiny_spec, tmp_path: Path, shared_cache: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        small_runs = mount_point / "runs"
        small_runs.mkdir()
        (small_runs / ".cache").symlink_to(shared_cache, target_is_directory=True)  # data fits; checkpoints do not
        spec = tiny_spec(model={"n_embd": 128, "n_head": 4}, train={"max_steps": 40, "checkpoint_every": 5})
        result = run_cli(["run", str(spec), "--nproc", "1", "--name", "full", "--runs-dir", str(small_runs)], env=ONE_THREAD)
        assert result.returncode == 1, result.stdout + result.stderr
        run_dir = next(small_runs.glob("full-*"))
        status = status_of(run_dir)
        assert status["status"] == "failed" and "No space left on device" in status["error"], status
        assert "No space left on device" in result.stderr
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.endswith(".tmp")] \
            if (run_dir / "checkpoints").exists() else []
        assert leftovers == []
        listed = run_cli(["runs", "--json", "--runs-dir", str(small_runs)])
        assert [row["status"] for row in json.loads(listed.stdout)] == ["failed"]
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_eval_and_generate_refuse_broken_run_files_in_one_line(runs_dir: Path, tiny_spec, tmp_path: Path) -> None:
    # Each kind of damage is covered in tests/test_evaluate.py; here: the CLI turns them into exit 2.
    spec = tiny_spec(train={"max_steps": 10, "eval_every": 5}, tokenizer={"kind": "char", "special_tokens": []})
    done = run_cli(["run", str(spec), "--nproc", "1", "--name", "use", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = next(runs_dir.glob("use-*"))
    data = tmp_path / "text.txt"
    data.write_text("To be, or not to be 東京", encoding="utf-8")

    def refused(*args: str) -> str:
        result = run_cli([*args, "--runs-dir", str(runs_dir)])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.stderr

    assert "cannot encode" in refused("eval", run_dir.name, "--data", str(data))  # no <unk> in the vocabulary
    best = run_dir / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    assert "best.pt: cannot load checkpoint" in refused("generate", run_dir.name, "--prompt", "To")


def test_resume_after_the_corpus_changed_exits_2_unless_accepted(runs_dir: Path, tiny_spec, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    text = CORPUS.read_text(encoding="utf-8")[:200_000]
    corpus.write_text(text, encoding="utf-8")
    spec = tiny_spec(data={"path": str(corpus), "val_fraction": 0.1},
                     train={"max_steps": 30, "checkpoint_every": 5, **PACED})
    process = start_cli(["run", str(spec), "--nproc", "1", "--name", "drift", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    wait_for(lambda: any(runs_dir.glob("drift-*/checkpoints/last.pt")), 120, "a first checkpoint")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    run_dir = next(runs_dir.glob("drift-*"))
    corpus.write_text(text.replace("KING", "QUEEN"), encoding="utf-8")  # same characters, other text
    refused = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)])
    assert refused.returncode == 2 and "data.path changed" in refused.stderr, refused.stderr
    assert "--accept-corpus-change" in refused.stderr
    accepted = run_cli(["run", "--resume", run_dir.name, "--accept-corpus-change", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "continuing run" in accepted.stderr
    assert status_of(run_dir)["status"] == "completed"


def test_a_run_owned_by_another_host_resumes_only_with_force(runs_dir: Path, tiny_spec) -> None:
    run_dir = interrupted_run(runs_dir, tiny_spec, "elsewhere", max_steps=20)
    status = status_of(run_dir)
    # What a node that died on another machine (or pid 1 in a container, alive again) leaves.
    status.update(status="running", host="other-node-17", launcher_pid=1)
    (run_dir / "status.json").write_text(json.dumps(status))
    refused = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)])
    assert refused.returncode == 2 and "--force" in refused.stderr and "other-node-17" in refused.stderr
    forced = run_cli(["run", "--resume", run_dir.name, "--force", "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "--force: resuming although status.json names launcher pid 1 on host other-node-17" in forced.stderr
    # Same host, pid 1 alive (as in a container): the lock, not the pid, says nobody owns it.
    status = status_of(run_dir)
    status.update(status="running", host=socket.gethostname(), launcher_pid=1)
    (run_dir / "status.json").write_text(json.dumps(status))
    assert json.loads(run_cli(["runs", "--json", "--runs-dir", str(runs_dir)]).stdout)[0]["status"] == "crashed"


def test_malformed_run_dirs_do_not_break_runs_and_report(runs_dir: Path, tiny_spec, tmp_path: Path) -> None:
    good = run_cli(["run", str(tiny_spec(train={"max_steps": 5, "eval_every": 5})), "--nproc", "1", "--name", "good",
                    "--runs-dir", str(runs_dir)], env=ONE_THREAD)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = runs_dir / "broken-run"
    broken.mkdir()
    (broken / "spec.yaml").write_text("name: [unclosed\n")
    shaped = runs_dir / "shaped-run"
    shaped.mkdir()
    (shaped / "spec.yaml").write_text("name: x\n")
    (shaped / "status.json").write_text('["not", "an", "object"]')
    listed = run_cli(["runs", "--json", "--runs-dir", str(runs_dir)])
    assert listed.returncode == 0, listed.stderr
    assert [row["name"] for row in json.loads(listed.stdout)] == ["good"]
    assert "skipped run broken-run" in listed.stderr and "skipped run shaped-run" in listed.stderr
    report = run_cli(["report", "--out", str(tmp_path / "r.html"), "--runs-dir", str(runs_dir)])
    assert report.returncode == 0, report.stderr
    resume = run_cli(["run", "--resume", "shaped-run", "--runs-dir", str(runs_dir)])
    assert resume.returncode == 2 and "status.json: expected a JSON object" in resume.stderr
