"""The sweep loop: `Sweep.run` starts trials (each a launched gptexp run) until the study is full.

See the package docstring (gptexp/sweep/__init__.py) for counting, retries, signals and workers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import socket
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from gptexp import launch
from gptexp.contract import OUTPUT_LOG
from gptexp.redaction import redact
from gptexp.spec import ExperimentSpec, SpecError, format_validation_error
from gptexp.sweep.pruning import ENV_METRIC, ENV_PRUNER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_TRIAL_ID, build_pruner
from gptexp.sweep.spec import STUDY_TAG_PREFIX, TRIAL_TAG_PREFIX, CategoricalParam, FloatParam, IntParam, SweepSpec
from gptexp.sweep.status import format_params
from gptexp.runlock import run_is_locked
from gptexp.sweep.storage import (StudyGate, check_url, default_storage_url, fail_stale_trials, journal_path, normalize_url,
                                   open_storage, prepare_sqlite)
from gptexp.tracking import RunStore, new_run_id, pid_alive

POLL_S = 2.0  # how often a process with nothing to start looks for retries and finished trials
# A trial of another host whose run is unlocked is failed only if it is still RUNNING this long
# after it was first seen so: its owner may be between the end of the run and telling the study.
ORPHAN_CONFIRM_S = 10.0


# ---------------------------------------------------------------------------------------------
# the search space: data in, trial.suggest_* out (the one place)


def suggest(trial: optuna.Trial, space: dict[str, FloatParam | IntParam | CategoricalParam]) -> dict[str, Any]:
    """Sample every param of `space`; the param name is its dotted spec path."""
    values: dict[str, Any] = {}
    for path, param in space.items():
        if isinstance(param, CategoricalParam):
            values[path] = trial.suggest_categorical(path, param.choices)
        elif isinstance(param, IntParam):
            values[path] = trial.suggest_int(path, param.low, param.high, step=param.step, log=param.log)
        else:
            values[path] = trial.suggest_float(path, param.low, param.high, step=param.step, log=param.log)
    return values


def make_sampler(sweep: SweepSpec) -> optuna.samplers.BaseSampler:
    kind, seed = sweep.sampler.kind, sweep.sampler.seed
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(sweep.grid(), seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    # constant_liar: running trials count as (pessimistic) results, so parallel trials spread out.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def trial_budget(sweep: SweepSpec) -> int:
    """n_trials, capped at the grid's size for a grid search."""
    if sweep.sampler.kind == "grid":
        return min(sweep.n_trials, math.prod(len(values) for values in sweep.grid().values()))
    return sweep.n_trials


# ---------------------------------------------------------------------------------------------
# counting and retrying trials


@dataclass
class Budget:
    counted: int  # trials that count towards n_trials (a retried failure is replaced by its retry)
    waiting: int  # queued retries
    running: int  # running anywhere (this process, another one, or a dead one not yet failed)


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that were queued again (their retries carry them in retry_history)."""
    return {number for t in trials for number in t.system_attrs.get("retry_history", [])}


def count_trials(study: optuna.Study) -> Budget:
    trials = study.get_trials(deepcopy=False)
    replaced = superseded(trials)
    counted = [t for t in trials if t.number not in replaced]
    return Budget(counted=len(counted),
                  waiting=sum(t.state == TrialState.WAITING for t in counted),
                  running=sum(t.state == TrialState.RUNNING for t in trials))


def requeue(study: optuna.Study, trial: FrozenTrial, max_retry: int | None) -> bool:
    """Queue a failed trial again with the same params (Optuna's retry protocol); False at the limit."""
    system_attrs: dict[str, Any] = {"failed_trial": trial.number, "retry_history": [], **trial.system_attrs}
    system_attrs["retry_history"] = [*system_attrs["retry_history"], trial.number]
    if max_retry is not None and len(system_attrs["retry_history"]) > max_retry:
        return False
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        system_attrs=system_attrs,
    ))
    return True


class RetryStaleTrial:
    """The storage's heartbeat_stale_trial_callback: a trial whose worker died is queued again."""

    def __init__(self, max_retry: int) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        requeue(study, trial, self.max_retry)


# ---------------------------------------------------------------------------------------------
# trials whose worker died, without heartbeats (JournalStorage)


def trial_owner_is_gone(trial: FrozenTrial, grace_s: float, now: dt.datetime) -> bool:
    """Whether nothing runs RUNNING `trial` any more, judged by its run's OS locks.

    The sweep process that runs a trial records its host and pid, then launches the run, whose
    launcher (that same process) and trainer hold the run directory's locks (gptexp.runlock) until
    they exit; the kernel drops them when a process dies, SIGKILL included. A trial younger than
    `grace_s` may not have locked its run yet and is left alone.
    """
    started = trial.datetime_start
    if started is not None and (now - started).total_seconds() < grace_s:
        return False
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    here = host == socket.gethostname()
    if here and isinstance(pid, int) and pid_alive(pid):
        return False  # its sweep process lives on this machine (between runs, or launching one)
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and Path(run_dir).is_dir():
        return not run_is_locked(Path(run_dir))
    # No run directory to look at: it died before launching (here: its pid is gone), or the runs
    # directory is not shared with that host (elsewhere: nothing can be told from here).
    return here


def fail_orphaned_trials(study: optuna.Study, own: set[int], grace_s: float, max_retry: int,
                         suspects: dict[int, float], log: Callable[[str], None]) -> None:
    """Fail every RUNNING trial (not run by this process) whose owner is gone, and queue it again.

    The crash recovery of storages without heartbeats. A trial run on another host must be seen
    orphaned twice, ORPHAN_CONFIRM_S apart (`suspects` remembers when it was first seen).
    """
    now, clock = dt.datetime.now(), time.monotonic()  # Optuna stores naive local datetimes
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for number in set(suspects) - {t.number for t in running}:
        del suspects[number]
    for trial in running:
        if trial.number in own or not trial_owner_is_gone(trial, grace_s, now):
            suspects.pop(trial.number, None)
            continue
        if trial.user_attrs.get("host") != socket.gethostname():
            first_seen = suspects.setdefault(trial.number, clock)
            if clock - first_seen < ORPHAN_CONFIRM_S:
                continue
        suspects.pop(trial.number, None)
        storage = study._storage  # noqa: SLF001 - Optuna has no public way to end another process's trial
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", "worker lost (its run is no longer locked)")
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # told meanwhile by its owner
        requeued = requeue(study, study._storage.get_trial(trial._trial_id), max_retry)  # noqa: SLF001
        log(f"trial {trial.number} FAIL: worker lost (run {trial.user_attrs.get('run_id', '-')} is no longer locked)"
            + ("; queued again" if requeued else ""))


# ---------------------------------------------------------------------------------------------
# the sweep


class TrialRunFailed(Exception):
    """The trial's run failed (or its spec was bad); the trial ends FAIL."""


class TrialInterrupted(Exception):
    """The sweep was asked to stop while the trial ran; the trial ends FAIL and is queued again."""


@dataclass
class SweepResult:
    exit_code: int
    study_name: str
    storage_url: str
    started: int = 0
    errors: list[str] = field(default_factory=list)  # sweep workers that stopped on an unexpected error
    failed: list[str] = field(default_factory=list)  # trials of this process that failed for good


def open_study(sweep: SweepSpec, storage_url: str) -> optuna.Study:
    """Create the study or load it; a loaded study must agree on direction and metric."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    prepare_sqlite(storage_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(storage_url, heartbeat_interval=sweep.heartbeat_interval,
                               grace_period=sweep.grace_period,
                               heartbeat_stale_trial_callback=RetryStaleTrial(sweep.retries))
    sampler, pruner = make_sampler(sweep), build_pruner(sweep.pruner.model_dump(mode="json"))
    try:
        study = optuna.create_study(study_name=sweep.study, storage=storage, sampler=sampler, pruner=pruner,
                                    direction=sweep.direction)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=str(sweep.study), storage=storage, sampler=sampler, pruner=pruner)
        # A process that resumes or joins a study must not replay the seed's first draws: it
        # would repeat the params of the study's first trials.
        study.sampler.reseed_rng()
    where = f"study {sweep.study!r} in {redact(storage_url, known=[storage_url])}"
    if study.direction.name.lower() != sweep.direction:
        raise SpecError(f"{sweep.source}: direction: {sweep.direction}, but {where} was created to {study.direction.name.lower()}")
    attrs = study.user_attrs
    if attrs.get("metric", sweep.metric) != sweep.metric:
        raise SpecError(f"{sweep.source}: metric: {sweep.metric}, but {where} optimizes {attrs['metric']}")
    if "metric" not in attrs:
        study.set_user_attr("metric", sweep.metric)
        study.set_user_attr("experiment", sweep.experiment)
        study.set_user_attr("sweep", str(sweep.source))
    return study


class Sweep:
    """One `gptexp sweep` process: `workers` threads that each start trials until the study is full."""

    def __init__(self, sweep: SweepSpec, runs_dir: Path, storage_url: str | None = None,
                 log: Callable[[str], None] = print, cpus: int | None = None) -> None:
        self.sweep = sweep
        self.runs_dir = Path(runs_dir).resolve()
        self.storage_url = normalize_url(storage_url or sweep.storage or default_storage_url(self.runs_dir))
        # Every line this sweep prints goes through redact, knowing the URL's own password.
        self.log = lambda message: log(redact(message, known=[self.storage_url]))
        self.cpus = cpus or len(os.sched_getaffinity(0))
        self.n_trials = trial_budget(sweep)
        self._stop = threading.Event()
        self._signal: int | None = None
        self._processes: dict[int, subprocess.Popen] = {}
        self._signalled: set[int] = set()
        self._lock = threading.Lock()  # guards _processes and the sampler
        self._outcomes: dict[int, str] = {}  # trial number -> failed | bad input | interrupted
        self._errors: list[str] = []
        self._failed: list[str] = []  # "trial N: error" of trials this process ran that failed for good
        self._started = 0
        self._own: set[int] = set()  # numbers of the trials this process is running
        self._current = threading.local()  # the trial number a worker thread runs
        self._suspects: dict[int, float] = {}  # fail_orphaned_trials' memory

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> SweepResult:
        check_url(self.storage_url)  # a journal in a missing directory: exit 2 before anything
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.study = open_study(self.sweep, self.storage_url)
        self.gate = StudyGate(self.storage_url, self.sweep.study or "")
        self.deadline = time.monotonic() + self.sweep.timeout if self.sweep.timeout else None
        self.log(f"study {self.sweep.study} ({self.storage_url}): {self.n_trials} trials, "
                 f"{self.sweep.workers} at once, {self.sweep.direction} {self.sweep.metric}")
        on_main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main else {}
        threads = [threading.Thread(target=self._worker, name=f"sweep-worker-{i}", daemon=True)
                   for i in range(self.sweep.workers)]
        try:
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.gate.close()
        if self._signal is not None:
            code = launch.EXIT_SIGINT if self._signal == signal.SIGINT else launch.EXIT_SIGTERM
        else:
            # A study whose trials this process ran failed for good (after their retries) is not a
            # success, even though the study holds its n_trials: exit 1 and say which.
            if self._failed:
                self.log(f"{len(self._failed)} trial(s) failed after their retries: " + "; ".join(self._failed))
            code = launch.EXIT_FAILED if self._errors or self._failed else launch.EXIT_OK
        return SweepResult(code, self.sweep.study or "", self.storage_url, self._started,
                           list(self._errors), list(self._failed))

    def stop(self, signum: int = signal.SIGINT) -> None:
        """Start no new trial; forward `signum` once to every running torchrun."""
        if self._signal is None:
            self._signal = signum
        self._stop.set()
        with self._lock:
            for pid, process in self._processes.items():
                if pid not in self._signalled and process.poll() is None:
                    self._signalled.add(pid)
                    process.send_signal(signum)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._stop.is_set():
            self.log(f"{signal.Signals(signum).name}: stopping running trials (they checkpoint and are queued again)")
        self.stop(signum)

    def _worker(self) -> None:
        try:
            while not self._stop.is_set():
                if self.deadline is not None and time.monotonic() > self.deadline:
                    break
                self.gate.acquire()
                try:
                    self._recover_lost_trials()
                    budget = count_trials(self.study)
                    if budget.waiting or budget.counted < self.n_trials:
                        try:
                            self.study.optimize(self._objective, n_trials=1, catch=(TrialRunFailed, TrialInterrupted),
                                                callbacks=[self._after_trial])
                        finally:  # the trial is told by now: others may judge it again
                            with self._lock:
                                self._own.discard(getattr(self._current, "number", None))
                        continue
                finally:
                    self.gate.release()  # the objective released it once its trial existed
                if budget.running == 0:
                    break
                # Trials still run (here, elsewhere, or dead and not yet failed): one of them may
                # fail and be queued again, so wait for them rather than leave.
                self._stop.wait(min(POLL_S, self.sweep.heartbeat_interval))
        except Exception as error:  # noqa: BLE001 - report, stop starting trials, let others finish
            message = redact(f"{type(error).__name__}: {error}", known=[self.storage_url])
            self._errors.append(message)
            self.log(f"sweep worker stopped: {message}")
            self._stop.set()

    def _recover_lost_trials(self) -> None:
        """Fail (and queue again) trials whose worker died: by heartbeat on RDB storages, by run
        lock on a journal (it has no heartbeats)."""
        if journal_path(self.storage_url) is None:
            fail_stale_trials(self.study)
            return
        with self._lock:
            own = set(self._own)
        fail_orphaned_trials(self.study, own, self.sweep.grace_period, self.sweep.retries, self._suspects, self.log)

    # -- one trial --------------------------------------------------------------------------
    def _objective(self, trial: optuna.Trial) -> float:
        number = trial.number
        with self._lock:
            self._own.add(number)
        self._current.number = number
        self.gate.release()  # the trial exists (created or taken from the queue): others may go on
        # Who runs this trial, before anything else: the crash recovery of journal storages asks.
        trial.set_user_attr("host", socket.gethostname())  # several machines may share one study
        trial.set_user_attr("pid", os.getpid())
        with self._lock:
            values = suggest(trial, self.sweep.space)
        if self._stop.is_set():
            self._outcomes[number] = "interrupted"
            raise TrialInterrupted("the sweep was stopped before the trial started")
        try:
            spec = self.trial_spec(number, values)
        except SpecError as error:
            return self._fail(trial, "bad input", str(error))
        run_dir = self.runs_dir / str(spec.launch.run_id)
        trial.set_user_attr("run_id", run_dir.name)
        trial.set_user_attr("run_dir", str(run_dir))
        retry = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        self._started += 1
        self.log(f"trial {number} started{f' (retry of {retry})' if retry is not None else ''}: "
                 f"run {run_dir.name} {format_params(values)}")
        started = time.monotonic()
        try:
            result = launch.start_run(spec, self.runs_dir, extra_env=self.trial_env(trial, spec),
                                      log_path_name=OUTPUT_LOG, on_start=self._track)
        except SpecError as error:  # found while preparing data (a split too small, ...)
            return self._fail(trial, "bad input", str(error))
        wall = time.monotonic() - started
        summary = RunStore(result.run_dir).read_summary()
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("wall_time_s", round(wall, 3))
        for key in ("steps", "train_time_s"):
            if key in summary:
                trial.set_user_attr(key, summary[key])
        if result.exit_code == launch.EXIT_OK:
            value = summary.get(self.sweep.metric)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return self._fail(trial, "failed", f"summary.json has no finite {self.sweep.metric} ({value!r})")
            return float(value)
        if result.exit_code == launch.EXIT_PRUNED:
            raise optuna.TrialPruned(f"pruned at step {summary.get('steps')}")
        if result.status == "interrupted" or self._stop.is_set():
            trial.set_user_attr("interrupted", True)
            self._outcomes[number] = "interrupted"
            raise TrialInterrupted(f"run {result.run_id} was interrupted")
        error = RunStore(result.run_dir).read_status().get("error") or f"run exited {result.exit_code}"
        return self._fail(trial, "bad input" if result.exit_code == launch.EXIT_BAD_INPUT else "failed", str(error))

    def _fail(self, trial: optuna.Trial, outcome: str, error: str) -> float:
        self._outcomes[trial.number] = outcome
        error = redact(error, known=[self.storage_url])
        trial.set_user_attr("error", error)
        raise TrialRunFailed(error)

    def _track(self, process: subprocess.Popen) -> None:
        with self._lock:
            self._processes[process.pid] = process
        if self._stop.is_set():  # stopped while this trial prepared its data
            self.stop(self._signal or signal.SIGINT)

    def _after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            for pid in [pid for pid, p in self._processes.items() if p.poll() is not None]:
                del self._processes[pid]
        outcome = self._outcomes.pop(trial.number, None)
        value = f" {self.sweep.metric}={trial.value:.4f}" if trial.value is not None else ""
        error = f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else ""
        self.log(f"trial {trial.number} {trial.state.name}{value} (run {trial.user_attrs.get('run_id', '-')}){error}")
        if trial.state != TrialState.FAIL:
            return
        if outcome == "interrupted":
            requeue(study, trial, max_retry=None)
            self.log(f"trial {trial.number} queued again (interrupted)")
        elif outcome == "failed" and requeue(study, trial, self.sweep.retries):
            self.log(f"trial {trial.number} queued again (retries: {self.sweep.retries})")
        else:  # bad input for these params, or out of retries
            self._failed.append(f"trial {trial.number}: {trial.user_attrs.get('error', 'failed')}")

    # -- what a trial runs ------------------------------------------------------------------
    def trial_spec(self, number: int, values: dict[str, Any]) -> ExperimentSpec:
        study = self.sweep.study or ""
        spec = self.sweep.build_experiment(values)
        wandb = spec.tracking.wandb
        try:  # assignments are validated (W&B limits): the study name was checked at load time
            spec.name = f"{study}-t{number}"
            wandb.group = study
            wandb.tags = [t for t in wandb.tags if not t.startswith((STUDY_TAG_PREFIX, TRIAL_TAG_PREFIX))] + [
                f"{STUDY_TAG_PREFIX}{study}", f"{TRIAL_TAG_PREFIX}{number}"]
        except ValidationError as error:
            raise SpecError(format_validation_error(error, f"{self.sweep.source}: trial {number}")) from None
        if spec.launch.nnodes == 1 and self.sweep.workers * spec.launch.nproc > self.cpus:
            spec.launch.nproc = max(1, self.cpus // self.sweep.workers)
        spec.launch.run_id = new_run_id(spec.name)
        return spec

    def trial_env(self, trial: optuna.Trial, spec: ExperimentSpec) -> dict[str, str]:
        env = {
            ENV_TRIAL: str(trial.number),
            ENV_TRIAL_ID: str(trial._trial_id),  # Trial(study, trial_id) needs the storage's id
            ENV_STUDY: self.sweep.study or "",
            ENV_STORAGE: self.storage_url,
            ENV_METRIC: self.sweep.metric,
            ENV_PRUNER: json.dumps(self.sweep.pruner.model_dump(mode="json")),
        }
        if self.sweep.workers > 1:
            env["OMP_NUM_THREADS"] = str(max(1, self.cpus // (self.sweep.workers * spec.launch.nproc)))
        return env


