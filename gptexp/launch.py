"""Create a run, prepare its data, start torchrun, and turn the run's status.json into an exit code.

This module runs in the CLI process and never imports torch or wandb: the workers pay for those.
torchrun turns any worker's failure into exit 1 and cannot carry "pruned" or "interrupted", so the
trainer's rank 0 records the outcome in status.json and `exit_code_for` reads it from there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Callable

from gptexp.data import PreparedData, prepare_data
from gptexp.spec import ExperimentSpec, SpecError, check_data_file, validate_spec
from gptexp.tracking import RunStore, RunStoreError, new_run_id, pid_alive, read_json, run_dir_for

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_PRUNED = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
NOT_BUILT_YET: dict[str, str] = {}  # "section.kind" -> the issue that builds it


@dataclass
class LaunchResult:
    run_id: str
    run_dir: Path
    exit_code: int
    status: str


def check_supported(spec: ExperimentSpec) -> None:
    """Kinds the spec accepts but this version cannot run yet exit 2 with a clear message."""
    for section in ("tokenizer", "model", "objective", "dropout_schedule"):
        key = f"{section}.{getattr(spec, section).kind}"
        if key in NOT_BUILT_YET:
            raise SpecError(f"{section}.kind: {getattr(spec, section).kind!r} is not built yet ({NOT_BUILT_YET[key]})")


def create_run(spec: ExperimentSpec, runs_dir: Path, run_id: str | None = None, join: bool = False) -> RunStore:
    """A new run directory holding the resolved spec; the id is generated unless given.

    `join`: the nodes of a multi-node run all start with the same run id; on a shared filesystem
    the first one creates the directory and the others join it (their specs must agree).
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        candidate = run_id or new_run_id(spec.name)
        path = runs_dir / candidate
        try:
            path.mkdir()
        except FileExistsError:
            if run_id and join:
                return _join_run(spec, RunStore(path))
            if run_id:
                raise SpecError(f"run id {run_id!r} already exists in {runs_dir}") from None
            continue
        store = RunStore(path)
        write_text_atomic(store.spec_path, spec.to_yaml())
        return store
    raise RuntimeError("could not create a unique run directory")


def _join_run(spec: ExperimentSpec, store: RunStore) -> RunStore:
    import time

    for _ in range(50):  # the creating node writes spec.yaml right after mkdir
        if store.spec_path.exists():
            break
        time.sleep(0.1)
    if store.spec_path.exists() and store.spec_path.read_text(encoding="utf-8") != spec.to_yaml():
        raise SpecError(f"run id {store.run_id!r}: exists with a different spec; every node must run the same spec")
    return store


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_split_sizes(prepared: PreparedData, spec: ExperimentSpec) -> None:
    window = spec.model.block_size + 1
    tokens = prepared.split_tokens()
    for split, field in (("train", "data.path"), ("val", "data.val_path" if spec.data.val_path else "data.val_fraction")):
        n = tokens[split]
        if n < window + 1:
            raise SpecError(f"{field}: the {split} split has {n} tokens, fewer than model.block_size + 2 = {window + 1}")


def torchrun_command(spec: ExperimentSpec, store: RunStore, prepared: PreparedData, resume: bool) -> list[str]:
    launch = spec.launch
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(launch.nproc)]
    if launch.nnodes == 1 and not launch.rdzv_endpoint:
        command += ["--standalone", "--nnodes", "1"]
    else:
        command += ["--nnodes", str(launch.nnodes), "--rdzv-backend", "c10d",
                    "--rdzv-endpoint", str(launch.rdzv_endpoint), "--rdzv-id", store.run_id]
    command += ["-m", "gptexp.train", "--run-dir", str(store.dir), "--tokenizer", str(prepared.tokenizer_path),
                "--tokens", str(prepared.tokens_dir), "--corpus-sha256", prepared.corpus_sha256]
    if resume:
        command.append("--resume")
    return command


def exit_code_for(store: RunStore) -> tuple[int, str]:
    """The CLI exit code for the outcome rank 0 recorded (see DESIGN's exit codes)."""
    status = store.read_status()
    state = status.get("status")
    if state == "completed":
        return EXIT_OK, state
    if state == "pruned":
        return EXIT_PRUNED, state
    if state == "interrupted":
        return (EXIT_SIGINT if status.get("signal") == "SIGINT" else EXIT_SIGTERM), state
    return EXIT_FAILED, str(state)


def run_torchrun(command: list[str], store: RunStore, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None, on_start: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Run torchrun to the end, forwarding SIGINT/SIGTERM to it once; returns the run's exit code.

    Signal forwarding is installed only on the main thread (Python allows no other); a caller that
    runs launches on worker threads (a sweep with --workers) gets each process through `on_start`
    and forwards signals itself.
    """
    env = {**os.environ, **(extra_env or {}), "GPTEXP_LAUNCHER_PID": str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    output = open(log_path, "ab") if log_path else None
    # torchrun gets its own session: a Ctrl-C in the terminal reaches only us, and we forward it
    # exactly once (torchrun passes it on to every worker, which checkpoints and stops).
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=output, stderr=output)
    if on_start is not None:
        on_start(process)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            process.send_signal(signum)

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main_thread else {}
    try:
        torchrun_code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if output:
            output.close()
    if not store.status_path.exists():
        # A node of a multi-node run without a shared filesystem: rank 0 kept the run store on
        # its own node, so torchrun's exit code is all this node knows.
        return EXIT_OK if torchrun_code == 0 else EXIT_FAILED
    code, state = exit_code_for(store)
    if state == "running" and not _hosted_rank_zero(store):
        # Multi-node: rank 0 lives on another node and may still be writing its outcome.
        _wait_for_outcome(store)
        code, state = exit_code_for(store)
    if state == "running":
        # No worker recorded an outcome: a rank died hard (segfault, OOM kill) or torchrun failed.
        reason = f"signal {signal.Signals(received[0]).name}" if received else f"torchrun exit code {torchrun_code}"
        store.write_status("failed", error=f"workers stopped without recording an outcome ({reason})")
        return EXIT_FAILED
    return code


def _hosted_rank_zero(store: RunStore) -> bool:
    """Whether this launcher's node ran global rank 0 (rank 0 records its launcher's pid)."""
    status = store.read_status()
    if status.get("host") not in (None, socket.gethostname()):
        return False
    return status.get("launcher_pid") in (None, os.getpid())


def _wait_for_outcome(store: RunStore, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.read_status()
        if status.get("status") != "running":
            return
        if status.get("host") == socket.gethostname() and not pid_alive(status.get("launcher_pid")):
            return
        time.sleep(0.2)


def launch(spec: ExperimentSpec, store: RunStore, resume: bool, extra_env: dict[str, str] | None = None,
           log_path: Path | None = None, progress: Callable[[str], None] = lambda m: None,
           on_start: Callable[[subprocess.Popen], None] | None = None) -> LaunchResult:
    """Prepare data for `store`'s run and train it; every outcome ends up in status.json."""
    # A multi-node launcher cannot know before the rendezvous whether it hosts rank 0, so only a
    # single-node launcher marks the run running this early (rank 0 does it on every node).
    single_node = spec.launch.nnodes == 1
    if single_node:
        store.write_status("running", launcher_pid=os.getpid(), worker_pid=None, error=None)
    try:
        prepared = prepare_data(spec, store.dir.parent / ".cache", progress=progress)
        check_split_sizes(prepared, spec)
        write_text_atomic(store.tokenizer_path, prepared.tokenizer_path.read_text(encoding="utf-8"))
    except SpecError as error:
        if single_node:
            store.write_status("failed", error=str(error))
        raise
    except KeyboardInterrupt:
        if single_node:
            store.write_status("interrupted", signal="SIGINT", error="interrupted while preparing data")
        return LaunchResult(store.run_id, store.dir, EXIT_SIGINT, "interrupted")
    command = torchrun_command(spec, store, prepared, resume)
    code = run_torchrun(command, store, extra_env=extra_env, log_path=log_path, on_start=on_start)
    status = store.read_status().get("status") if store.status_path.exists() else None
    if status is None:  # see run_torchrun: rank 0 ran on another node
        status = "completed on this node; rank 0's node holds the run store" if code == EXIT_OK else "failed"
    return LaunchResult(store.run_id, store.dir, code, str(status))


def start_run(spec: ExperimentSpec, runs_dir: Path, extra_env: dict[str, str] | None = None,
              log_path_name: str | None = None, progress: Callable[[str], None] = lambda m: None,
              on_start: Callable[[subprocess.Popen], None] | None = None) -> LaunchResult:
    check_supported(spec)
    check_data_file(spec)
    store = create_run(spec, runs_dir, run_id=spec.launch.run_id, join=spec.launch.nnodes > 1)
    log_path = store.dir / log_path_name if log_path_name else None
    return launch(spec, store, resume=False, extra_env=extra_env, log_path=log_path, progress=progress, on_start=on_start)


def load_run_spec(store: RunStore) -> ExperimentSpec:
    import yaml

    raw = yaml.safe_load(store.spec_path.read_text(encoding="utf-8"))
    return validate_spec(raw, str(store.spec_path))


def resume_run(runs_dir: Path, run: str, extra_env: dict[str, str] | None = None,
               progress: Callable[[str], None] = lambda m: None) -> LaunchResult:
    """Continue a stopped or crashed run from checkpoints/last.pt (or from scratch if it has none)."""
    try:
        store = RunStore(run_dir_for(runs_dir, run))
    except RunStoreError as error:
        raise SpecError(str(error)) from None
    state = store.effective_status()
    if state == "running":
        pid = read_json(store.status_path) or {}
        raise SpecError(f"run {store.run_id}: still running (launcher pid {pid.get('launcher_pid')}); stop it first")
    if state == "completed":
        raise SpecError(f"run {store.run_id}: already completed; nothing to resume")
    spec = load_run_spec(store)
    check_data_file(spec)
    return launch(spec, store, resume=True, extra_env=extra_env, progress=progress)
