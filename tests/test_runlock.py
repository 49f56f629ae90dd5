"""Run locks: one owner per slot, named in the refusal, released by the kernel when the owner dies."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gptexp.runlock import RunInUse, acquire, acquire_writer, run_is_locked, writer_is_locked

HOLD = "import sys; from pathlib import Path; from gptexp.runlock import acquire, acquire_writer; " \
       "lock = (acquire_writer if sys.argv[2] == 'writer' else acquire)(Path(sys.argv[1])); " \
       "print('held', flush=True); sys.stdin.read()"


def hold_in_child(run_dir: Path, kind: str = "slot") -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), kind], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_owner_is_refused_with_pid_and_host_until_the_first_dies(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    try:
        assert run_is_locked(tmp_path)
        with pytest.raises(RunInUse) as error:
            acquire(tmp_path)
        assert str(error.value) == f"run {tmp_path.name} is in use by pid {child.pid} on host {socket.gethostname()}"
    finally:
        child.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel must release the lock
        child.wait()
    assert not run_is_locked(tmp_path)
    lock = acquire(tmp_path)  # free again, no stale lock
    lock.release()


def test_multi_node_runs_have_one_slot_per_node(tmp_path: Path) -> None:
    first, second = acquire(tmp_path, slots=2), acquire(tmp_path, slots=2)
    with pytest.raises(RunInUse):
        acquire(tmp_path, slots=2)
    first.release()
    acquire(tmp_path, slots=2).release()
    second.release()


def test_a_live_trainer_blocks_a_new_launcher(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path, "writer")
    try:
        assert writer_is_locked(tmp_path)
        with pytest.raises(RunInUse, match=f"pid {child.pid}.*trainer is still running"):
            acquire(tmp_path)
        with pytest.raises(RunInUse):
            acquire_writer(tmp_path)
    finally:
        child.kill()
        child.wait()
    acquire(tmp_path).release()
