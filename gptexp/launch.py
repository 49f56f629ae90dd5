"""Create a run, prepare its data, start torchrun, and turn the run's status.json into an exit code.

This module runs in the CLI process and never imports torch or wandb: the workers pay for those.
torchrun turns any worker's failure into exit 1 and cannot carry "pruned" or "interrupted", so the
trainer's rank 0 records the outcome in status.json and `exit_code_for` reads it from there.

Ownership: the launcher holds the run's OS lock (runlock.py) from before its first write until it
exits, so a second launcher of the same run exits 2 at once. Every path out of `launch` leaves a
truthful status: failed or interrupted with the reason, never "running" once nothing owns the run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Callable, Iterator

from gptexp import contract as C
from gptexp.contract import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM  # noqa: F401 - re-exported
from gptexp import preflight
from gptexp.data import PreparedData, prepare_data
from gptexp.runlock import RunInUse, RunLock, acquire, writer_is_locked
from gptexp.spec import ExperimentSpec, SpecError, check_data_file, validate_spec
from gptexp.tracking import RunStore, RunStoreError, new_run_id, pid_alive, run_dir_for

NOT_BUILT_YET: dict[str, str] = {}  # "section.kind" -> the issue that builds it
# Seconds a multi-node rendezvous may take to form before torchrun gives up (torch's own default
# is 600); $GPTEXP_RDZV_TIMEOUT overrides it.
DEFAULT_RDZV_TIMEOUT_S = 600


@dataclass
class LaunchResult:
    run_id: str
    run_dir: Path
    exit_code: int
    status: str
    error: str | None = None


class _Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived while the launcher itself was working (data preparation)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into an exception while the launcher prepares data (main thread only).

    Without this SIGTERM's default action ends the process at once and status.json keeps saying
    "running"; with it the status records the interruption first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def rdzv_timeout_s() -> int:
    raw = os.environ.get(C.ENV_RDZV_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_RDZV_TIMEOUT_S
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"${C.ENV_RDZV_TIMEOUT}={raw!r}: expected whole seconds") from None
    if not 1 <= value <= 86400:
        raise SpecError(f"${C.ENV_RDZV_TIMEOUT}={value}: expected 1 to 86400 seconds")
    return value


def check_supported(spec: ExperimentSpec) -> None:
    """Kinds the spec accepts but this version cannot run yet exit 2 with a clear message; so do
    component files that do not load (gptexp.components.check_runnable)."""
    from gptexp.components import ComponentError, check_runnable

    try:
        check_runnable(spec)
    except ComponentError as error:
        raise SpecError(str(error)) from None
    for section in ("tokenizer", "model", "objective", "dropout_schedule"):
        key = f"{section}.{getattr(spec, section).kind}"
        if key in NOT_BUILT_YET:
            raise SpecError(f"{section}.kind: {getattr(spec, section).kind!r} is not built yet ({NOT_BUILT_YET[key]})")


def create_run(spec: ExperimentSpec, runs_dir: Path, run_id: str | None = None, join: bool = False) -> RunStore:
    """A new (or, with `join`, joined) run directory holding the resolved spec."""
    return create_or_join_run(spec, runs_dir, run_id, join)[0]


def create_or_join_run(spec: ExperimentSpec, runs_dir: Path, run_id: str | None = None,
                       join: bool = False) -> tuple[RunStore, bool]:
    """A run directory holding the resolved spec, and whether it existed already (joined).

    The id is generated unless given. `join`: the nodes of a multi-node run all start with the same
    run id; on a shared filesystem the first one creates the directory and the others join it
    (their specs must agree). A requeued multi-node job joins its own earlier directory the same way.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        candidate = run_id or new_run_id(spec.name)
        path = runs_dir / candidate
        try:
            path.mkdir()
        except FileExistsError:
            if run_id and join:
                return _join_run(spec, RunStore(path)), True
            if run_id:
                raise SpecError(f"run id {run_id!r} already exists in {runs_dir}") from None
            continue
        store = RunStore(path)
        write_text_atomic(store.spec_path, spec.to_yaml())
        return store, False
    raise RuntimeError("could not create a unique run directory")


def _join_run(spec: ExperimentSpec, store: RunStore) -> RunStore:
    for _ in range(50):  # the creating node writes spec.yaml right after mkdir
        if store.spec_path.exists():
            break
        time.sleep(0.1)
    try:
        existing = store.read_spec()
    except RunStoreError as error:
        raise SpecError(str(error)) from None
    from gptexp.safe_yaml import load_yaml

    if existing != load_yaml(spec.to_yaml(), "the spec"):
        raise SpecError(f"run id {store.run_id!r}: exists with a different spec; every node must run the same spec")
    return store


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
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
                    "--rdzv-endpoint", str(launch.rdzv_endpoint), "--rdzv-id", store.run_id,
                    "--rdzv-conf", f"join_timeout={rdzv_timeout_s()}"]
    command += ["-m", "gptexp.train", "--run-dir", str(store.dir), "--tokenizer", str(prepared.tokenizer_path),
                "--tokens", str(prepared.tokens_dir), "--corpus-sha256", prepared.corpus_sha256]
    if resume:
        command.append("--resume")
    return command


def exit_code_for(store: RunStore) -> tuple[int, str]:
    """The CLI exit code for the outcome rank 0 recorded (see contract.exit_code_for_status)."""
    try:
        status = store.read_status()
    except RunStoreError as error:
        return EXIT_FAILED, f"unreadable status ({error})"
    state = str(status.get("status"))
    return C.exit_code_for_status(state, status.get("signal")), state


def _status_mtime(store: RunStore) -> int | None:
    try:
        return store.status_path.stat().st_mtime_ns
    except OSError:
        return None


def run_torchrun(command: list[str], store: RunStore, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None, on_start: Callable[[subprocess.Popen], None] | None = None,
                 progress: Callable[[str], None] = lambda m: None) -> int:
    """Run torchrun to the end, forwarding SIGINT/SIGTERM to it once; returns the run's exit code.

    Signal forwarding is installed only on the main thread (Python allows no other); a caller that
    runs launches on worker threads (a sweep with --workers) gets each process through `on_start`
    and forwards signals itself.
    """
    from gptexp.components import start_dir

    env = {**os.environ, **(extra_env or {}), C.ENV_LAUNCHER_PID: str(os.getpid()), "PYTHONUNBUFFERED": "1"}
    env.setdefault(C.ENV_START_DIR, str(start_dir()))  # custom components import from here in the workers
    # torchrun sets 1 thread per rank anyway, but prints a banner saying so unless it is already set.
    env.setdefault("OMP_NUM_THREADS", "1")
    status_before = _status_mtime(store)
    started = time.monotonic()
    output = open(log_path, "ab") if log_path else None
    received: list[int] = []
    if output is None:  # a console: rank 0 prints there and also appends its lines to output.log
        env[C.ENV_CONSOLE_LOG] = str(store.output_log)
    # torchrun gets its own session: a Ctrl-C in the terminal reaches only us, and we forward it
    # exactly once (torchrun passes it on to every worker, which checkpoints and stops).
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=output,
                               stderr=output if output else subprocess.PIPE)
    pump = None if output else _pump_stderr(process, store.output_log, interrupted=lambda: bool(received))
    if on_start is not None:
        on_start(process)

    def forward(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            process.send_signal(signum)

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main_thread else {}
    try:
        torchrun_code = process.wait()
        if pump is not None:
            pump.join(timeout=30)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if output:
            output.close()
    multi_node = "--standalone" not in command
    if multi_node and torchrun_code != 0 and _status_mtime(store) == status_before:
        # No rank 0 wrote anything during this launch: the job never formed (or torchrun failed
        # before starting workers). Say so instead of leaving the reader to guess.
        error = (f"the workers never started: the multi-node rendezvous did not form within "
                 f"{rdzv_timeout_s()} s, or torchrun failed before training (torchrun exit code {torchrun_code}, "
                 f"after {time.monotonic() - started:.0f} s); start every node with the same --rdzv-endpoint "
                 f"and --run-id, or set ${C.ENV_RDZV_TIMEOUT}")
        if received:
            store.write_status(C.INTERRUPTED, signal=signal.Signals(received[0]).name, error=error)
            return C.exit_code_for_status(C.INTERRUPTED, signal.Signals(received[0]).name)
        store.write_status(C.FAILED, error=error)
        return EXIT_FAILED
    if not store.status_path.exists():
        # A node of a multi-node run without a shared filesystem: rank 0 kept the run store on
        # its own node, so torchrun's exit code is all this node knows.
        return EXIT_OK if torchrun_code == 0 else EXIT_FAILED
    code, state = exit_code_for(store)
    if state == C.RUNNING and not _hosted_rank_zero(store):
        # Multi-node: rank 0 lives on another node and may still be writing its outcome.
        _wait_for_outcome(store)
        code, state = exit_code_for(store)
    if state == C.RUNNING and not writer_is_locked(store.dir):
        # No worker recorded an outcome: a rank died hard (segfault, OOM kill) or torchrun failed.
        reason = f"signal {signal.Signals(received[0]).name}" if received else f"torchrun exit code {torchrun_code}"
        store.write_status(C.FAILED, error=f"workers stopped without recording an outcome ({reason})")
        return EXIT_FAILED
    return code


def _pump_stderr(process: subprocess.Popen, log_path: Path, interrupted: Callable[[], bool]) -> threading.Thread:
    """Copy torchrun's and the workers' stderr to ours and to output.log, line by line.

    Once the run is interrupted (Ctrl-C, SIGTERM), stderr goes to output.log only: what follows is
    torchrun's shutdown (its agent prints a SignalException traceback on SIGINT) and says nothing
    the launcher's "interrupted ... resume with" lines do not.
    """
    def copy() -> None:
        try:
            log = open(log_path, "ab")
        except OSError:
            log = None
        with process.stderr:
            for line in iter(process.stderr.readline, b""):
                if log is not None:
                    log.write(line)
                    log.flush()
                if not interrupted():
                    console = getattr(sys.stderr, "buffer", None)  # absent when a test swaps sys.stderr
                    console.write(line) if console is not None else sys.stderr.write(line.decode(errors="replace"))
                    sys.stderr.flush()
        if log is not None:
            log.close()

    thread = threading.Thread(target=copy, name="torchrun-stderr", daemon=True)
    thread.start()
    return thread


def _hosted_rank_zero(store: RunStore) -> bool:
    """Whether this launcher's node ran global rank 0 (rank 0 records its launcher's pid)."""
    status = store.read_status()
    if status.get("host") not in (None, socket.gethostname()):
        return False
    return status.get("launcher_pid") in (None, os.getpid())


def _wait_for_outcome(store: RunStore, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = store.read_status()
        if status.get("status") != C.RUNNING:
            return
        if status.get("host") == socket.gethostname() and not pid_alive(status.get("launcher_pid")):
            return
        time.sleep(0.2)


def check_corpus_unchanged(store: RunStore, prepared: PreparedData, accept_change: bool,
                           progress: Callable[[str], None]) -> None:
    """A resumed run must train on the corpus it started with (its tokenizer and data depend on it)."""
    recorded = store.read_status().get("corpus_sha256") or store.read_summary().get(C.SUMMARY_CORPUS_SHA256)
    if not recorded or recorded == prepared.corpus_sha256:
        return
    if not accept_change:
        raise SpecError(f"run {store.run_id}: data.path changed since the run started (corpus sha256 "
                        f"{str(recorded)[:12]}… now {prepared.corpus_sha256[:12]}…); restore it, or pass "
                        "--accept-corpus-change to continue on the new text")
    if store.tokenizer_path.is_file() and store.tokenizer_path.read_bytes() != prepared.tokenizer_path.read_bytes():
        raise SpecError(f"run {store.run_id}: the changed corpus gives a different tokenizer, so the checkpoint "
                        "cannot continue on it even with --accept-corpus-change; start a new run")
    progress(f"--accept-corpus-change: continuing run {store.run_id} on a changed corpus "
             f"(sha256 {prepared.corpus_sha256[:12]}…, was {str(recorded)[:12]}…)")


def launch(spec: ExperimentSpec, store: RunStore, resume: bool, extra_env: dict[str, str] | None = None,
           log_path: Path | None = None, progress: Callable[[str], None] = lambda m: None,
           on_start: Callable[[subprocess.Popen], None] | None = None,
           accept_corpus_change: bool = False, overrides: list[str] | None = None) -> LaunchResult:
    """Prepare data for `store`'s run and train it; every outcome ends up in status.json.

    The caller holds the run's lock (see `start_run`, `resume_run`). Each launch appends its
    command line, `overrides` (the user's --set values) and machine facts to launches.jsonl.
    """
    # A multi-node launcher cannot know before the rendezvous whether it hosts rank 0, so only a
    # single-node launcher marks the run running this early (rank 0 does it on every node).
    single_node = spec.launch.nnodes == 1

    def record(status: str, **fields: object) -> None:
        if single_node:
            store.write_status(status, **fields)

    try:
        record(C.RUNNING, launcher_pid=os.getpid(), worker_pid=None, error=None, signal=None)
        from gptexp.runrecord import append_launch, launch_facts

        append_launch(store.dir, launch_facts(overrides, resume=resume))
        with _signals_raise():
            prepared = prepare_data(spec, store.dir.parent / ".cache", progress=progress)
            check_split_sizes(prepared, spec)
            if resume:
                check_corpus_unchanged(store, prepared, accept_corpus_change, progress)
            write_text_atomic(store.tokenizer_path, prepared.tokenizer_path.read_text(encoding="utf-8"))
            from gptexp.components import record_components

            record_components(spec, store.dir, resume, warn=progress)
            record(C.RUNNING, corpus_sha256=prepared.corpus_sha256)
        command = torchrun_command(spec, store, prepared, resume)
        code = run_torchrun(command, store, extra_env=extra_env, log_path=log_path, on_start=on_start, progress=progress)
    except SpecError as error:
        record(C.FAILED, error=str(error))
        raise
    except (_Interrupted, KeyboardInterrupt) as stop:
        name = stop.signal_name if isinstance(stop, _Interrupted) else C.SIGINT_NAME
        error = f"interrupted by {name} while preparing data"
        record(C.INTERRUPTED, signal=name, error=error)
        return LaunchResult(store.run_id, store.dir, C.exit_code_for_status(C.INTERRUPTED, name), C.INTERRUPTED, error)
    except Exception as error:  # noqa: BLE001 - a full disk, a corrupt cache, a bug: the status must say so
        from gptexp.redaction import redact

        message = redact(f"{type(error).__name__}: {error}")
        record(C.FAILED, error=message)
        return LaunchResult(store.run_id, store.dir, EXIT_FAILED, C.FAILED, message)
    try:
        state = str(store.read_status().get("status")) if store.status_path.exists() else None
        error_text = store.read_status().get("error") if state == C.FAILED else None
    except RunStoreError as error:
        state, error_text = C.FAILED, str(error)
    if state is None:  # see run_torchrun: rank 0 ran on another node
        state = "completed on this node; rank 0's node holds the run store" if code == EXIT_OK else C.FAILED
    return LaunchResult(store.run_id, store.dir, code, state, error_text)


def _lock(store: RunStore, spec: ExperimentSpec) -> RunLock:
    try:
        return acquire(store.dir, slots=spec.launch.nnodes)
    except RunInUse as error:
        raise SpecError(str(error)) from None


def start_run(spec: ExperimentSpec, runs_dir: Path, extra_env: dict[str, str] | None = None,
              log_path_name: str | None = None, progress: Callable[[str], None] = lambda m: None,
              on_start: Callable[[subprocess.Popen], None] | None = None,
              accept_corpus_change: bool = False, overrides: list[str] | None = None) -> LaunchResult:
    """Create (or, for a multi-node run id that exists, continue) a run and train it.

    Multi-node: every node must name the run (--run-id) so that all of them join one directory;
    a requeued job names it again, and then continues the run from its last checkpoint, or exits
    2 when the run is already finished. It never starts a run over its checkpoints.
    """
    check_supported(spec)
    preflight.check(spec)  # device present, memory estimate fits: exit 2 before a run exists
    check_data_file(spec)
    multi_node = spec.launch.nnodes > 1
    if multi_node and not spec.launch.run_id:
        raise SpecError(f"launch.nnodes {spec.launch.nnodes}: a multi-node run needs --run-id (the same on every "
                        "node), or the nodes would make different runs and never meet")
    if multi_node:
        rdzv_timeout_s()  # a bad $GPTEXP_RDZV_TIMEOUT is bad input, before anything starts
    store, existed = create_or_join_run(spec, runs_dir, run_id=spec.launch.run_id, join=multi_node)
    lock = _lock(store, spec)
    try:
        if existed:
            try:
                state = store.read_status().get("status")
            except RunStoreError as error:
                raise SpecError(str(error)) from None
            if state in C.FINISHED_STATUSES:
                raise SpecError(f"run {store.run_id}: already {state}; nothing to do (a requeued job of a "
                                "finished run). Use a new --run-id to train again")
            if store.last_checkpoint.exists():
                progress(f"run {store.run_id} exists ({state}): continuing from its last checkpoint")
        log_path = store.dir / log_path_name if log_path_name else None
        # Multi-node: every node's trainer loads checkpoints/last.pt when there is one, so a
        # requeued job continues where the last one stopped and a fresh one starts at step 0.
        return launch(spec, store, resume=multi_node, extra_env=extra_env, log_path=log_path, progress=progress,
                      on_start=on_start, accept_corpus_change=accept_corpus_change, overrides=overrides)
    finally:
        lock.release()


def load_run_spec(store: RunStore) -> ExperimentSpec:
    try:
        raw = store.read_spec()
    except RunStoreError as error:
        raise SpecError(str(error)) from None
    return validate_spec(raw, str(store.spec_path))


def resume_run(runs_dir: Path, run: str, extra_env: dict[str, str] | None = None,
               progress: Callable[[str], None] = lambda m: None, force: bool = False,
               accept_corpus_change: bool = False) -> LaunchResult:
    """Continue a stopped or crashed run from checkpoints/last.pt (or from scratch if it has none).

    `force`: resume although status.json says the run is running on another host, whose processes
    this machine cannot check. It never overrides a lock that a live process holds.
    """
    try:
        store = RunStore(run_dir_for(runs_dir, run))
    except RunStoreError as error:
        raise SpecError(str(error)) from None
    from gptexp.components import recorded_start_dir

    started_in = recorded_start_dir(store.dir)
    if started_in and not os.environ.get(C.ENV_START_DIR):
        os.environ[C.ENV_START_DIR] = started_in  # custom components import from where the run started
    spec = load_run_spec(store)
    preflight.check(spec)  # this machine may differ from the one that started the run
    lock = _lock(store, spec)
    try:
        try:
            status = store.read_status()
        except RunStoreError as error:
            if not force:
                raise SpecError(f"{error}; pass --force to resume anyway (the status is rewritten)") from None
            progress(f"--force: ignoring the unreadable status ({error})")
            status = {"status": "unknown"}
        state = status.get("status")
        if state in C.FINISHED_STATUSES:
            raise SpecError(f"run {store.run_id}: already {state}; nothing to resume")
        owner_host = status.get("host")
        if state == C.RUNNING and owner_host not in (None, socket.gethostname()):
            # The lock says no launcher on this machine owns the run; the host it names may still.
            owner = f"launcher pid {status.get('launcher_pid')} on host {owner_host}"
            if not force:
                raise SpecError(f"run {store.run_id}: status says running ({owner}), which this machine cannot "
                                "check; if no process of that run is alive, resume with --force")
            progress(f"--force: resuming although status.json names {owner} as running it (not checked)")
        check_data_file(spec)
        return launch(spec, store, resume=True, extra_env=extra_env, progress=progress,
                      accept_corpus_change=accept_corpus_change)
    finally:
        lock.release()
