"""Sweep storages: journal URLs, the journal's gate, and crash recovery without heartbeats."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from gptexp import runlock
from gptexp.spec import SpecError
from gptexp.sweep.runner import count_trials, fail_orphaned_trials, trial_owner_is_gone
from gptexp.sweep.storage import StudyGate, check_url, journal_path, normalize_url, open_storage, storage_file


def test_journal_urls_name_one_absolute_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert journal_path("journal:///shared/s.journal") == Path("/shared/s.journal")
    assert journal_path("journal:rel/s.log") == Path("rel/s.log")
    assert journal_path("sqlite:///x.db") is None and journal_path("journal:") is None
    assert normalize_url("journal:rel/s.log") == f"journal://{tmp_path}/rel/s.log"
    assert normalize_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert storage_file("sqlite:////a/b.db") == Path("/a/b.db") and storage_file("journal:///a/b.log") == Path("/a/b.log")
    with pytest.raises(SpecError, match="expected journal:///absolute/path"):
        check_url("journal:")
    with pytest.raises(SpecError, match="directory .*missing does not exist"):
        check_url(f"journal://{tmp_path}/missing/s.journal")
    check_url(f"journal://{tmp_path}/s.journal")


def test_a_journal_storage_is_shared_by_processes(tmp_path: Path) -> None:
    url = f"journal://{tmp_path}/s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.enqueue_trial({"x": 1.0})
    code = ("import optuna; from gptexp.sweep.storage import open_storage; "
            f"s = optuna.load_study(study_name='s', storage=open_storage({url!r})); t = s.ask(); s.tell(t, t.suggest_float('x', 0, 2) * 3)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})
    [trial] = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value == 3.0 and trial.params == {"x": 1.0}


def test_the_journal_gate_excludes_other_holders_and_survives_a_dead_one(tmp_path: Path) -> None:
    url = f"journal://{tmp_path}/s.journal"
    first, second = StudyGate(url, "s", stale_after_s=2), StudyGate(url, "s", stale_after_s=2)
    first.acquire()
    got, done = threading.Event(), threading.Event()

    def wait_then_hold() -> None:
        with second():
            got.set()
            done.wait(5)

    waiter = threading.Thread(target=wait_then_hold, daemon=True)
    waiter.start()
    assert not got.wait(0.5)  # held by the other gate
    first.release()
    assert got.wait(5)
    done.set()
    waiter.join(5)
    # A holder SIGKILLed inside the gate leaves its link behind; a waiter breaks it after stale_after_s.
    code = (f"from gptexp.sweep.storage import StudyGate; g = StudyGate({url!r}, 's'); g.acquire(); "
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert Path(f"{tmp_path}/s.journal.gate.lock").is_symlink()
    started = time.monotonic()
    with first():
        pass
    assert 1.5 < time.monotonic() - started < 10


def running_trial(study: optuna.Study, **attrs: object) -> optuna.trial.FrozenTrial:
    trial = study.ask({"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)})
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return study.trials[trial.number]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_trial_whose_run_lock_is_gone_is_failed_and_queued_again(tmp_path: Path) -> None:
    url = f"journal://{tmp_path}/s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    here = socket.gethostname()
    locked_dir, dead_dir = tmp_path / "locked-run", tmp_path / "dead-run"
    locked_dir.mkdir()
    dead_dir.mkdir()
    held = runlock.acquire(locked_dir)  # a launcher of this run still lives (this process)
    try:
        alive = running_trial(study, host=here, pid=os.getpid(), run_dir=str(tmp_path / "no-run-yet"))
        locked = running_trial(study, host=here, pid=dead_pid(), run_dir=str(locked_dir))
        dead = running_trial(study, host=here, pid=dead_pid(), run_dir=str(dead_dir), run_id="dead-run")
        unlaunched = running_trial(study, host=here, pid=dead_pid())
        elsewhere = running_trial(study, host="another-host", pid=1)  # no run dir visible: cannot tell
        own = running_trial(study, host=here, pid=dead_pid(), run_dir=str(dead_dir))
        later = dt.datetime.now() + dt.timedelta(seconds=120)
        assert not trial_owner_is_gone(dead, grace_s=300, now=later - dt.timedelta(seconds=119))  # too young
        lines: list[str] = []
        fail_orphaned_trials(study, {own.number}, grace_s=0, max_retry=1, suspects={}, log=lines.append)
    finally:
        held.release()
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == states[locked.number] == states[elsewhere.number] == TrialState.RUNNING
    assert states[own.number] == TrialState.RUNNING
    assert states[dead.number] == states[unlaunched.number] == TrialState.FAIL
    failed = study.trials[dead.number]
    assert failed.user_attrs["error"] == "worker lost (its run is no longer locked)"
    retries = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [dead.number, unlaunched.number]
    assert retries[0].params == study.trials[retries[0].system_attrs["failed_trial"]].params
    assert any(f"trial {dead.number} FAIL: worker lost (run dead-run is no longer locked); queued again" == l for l in lines)
    assert vars(count_trials(study))["waiting"] == 2


def test_a_trial_elsewhere_must_be_seen_orphaned_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another host's sweep may be between the end of its run and telling the study."""
    import gptexp.sweep.runner as runner

    url = f"journal://{tmp_path}/s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    (tmp_path / "run").mkdir()
    trial = running_trial(study, host="another-host", pid=1, run_dir=str(tmp_path / "run"))
    suspects: dict[int, float] = {}
    fail_orphaned_trials(study, set(), 0, 1, suspects, print)
    assert study.trials[trial.number].state == TrialState.RUNNING and trial.number in suspects
    monkeypatch.setattr(runner, "ORPHAN_CONFIRM_S", 0.0)
    fail_orphaned_trials(study, set(), 0, 1, suspects, print)
    assert study.trials[trial.number].state == TrialState.FAIL and suspects == {}
