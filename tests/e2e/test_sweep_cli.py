"""`gptexp sweep` end to end: real trials, Ctrl-C and resume, a SIGKILLed worker, two processes on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from gptexp.sweep.storage import default_storage_url, open_storage
from tests.conftest import TINY_SPEC, processes_matching, run_cli, skip_or_fail, start_cli, wait_for

pytestmark = pytest.mark.slow

LONG = 2000  # steps of a trial that is meant to be stopped; the resumed study trains SHORT
SHORT = 20


def write_sweep(tmp_path: Path, **fields) -> Path:
    experiment = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    experiment["train"].update(eval_every=10, checkpoint_every=10, log_every=1)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    sweep = {"experiment": str(tmp_path / "experiment.yaml"),
             "overrides": {"train": {"max_steps": SHORT}},
             "space": {"optim.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
                       "model.n_embd": {"choices": [16, 32]}},
             "sampler": {"kind": "random", "seed": 0}, "pruner": {"kind": "none"},
             **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def load_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


def training_started(runs_dir: Path, count: int) -> bool:
    """`count` run directories whose trainer logged a training step (its signal handlers are set)."""
    started = [d for d in runs_dir.iterdir() if (d / "metrics.jsonl").exists()
               and '"train/loss"' in (d / "metrics.jsonl").read_text()]
    return len(started) >= count


def summary_of(trial: optuna.trial.FrozenTrial) -> dict:
    return json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def test_help_explains_both_forms_and_bad_input_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["sweep", "--help"])
    assert result.returncode == 0
    assert "gptexp sweep SWEEP [--n-trials N]" in result.stdout and "gptexp sweep status [STUDY]" in result.stdout

    sweep = write_sweep(tmp_path, space={"model.n_embdd": {"choices": [16, 32]}})
    cases = [
        (["sweep", str(sweep)], f"{sweep}: space.model.n_embdd: not a field of the experiment spec"),
        (["sweep", str(tmp_path / "missing.yaml")], "missing.yaml: file not found"),
        (["sweep", "status", "--runs-dir", str(tmp_path / "runs")], "no sweep storage at"),
        (["sweep", "status", "--n-trials", "3"], "only shows one"),
        (["sweep", str(sweep), "extra-study"], "STUDY goes with `gptexp sweep status`"),
        (["sweep", str(sweep), "--workers", "65"], "workers: Input should be less than or equal to 64"),
        (["sweep", str(sweep), "--study", "s" * 59], "--study: 59 characters"),
    ]
    for args, message in cases:
        result = run_cli(args + ["--runs-dir", str(tmp_path / "runs")] if "--runs-dir" not in args else args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "runs" / "optuna.db").exists()  # bad input creates no storage


def test_ctrl_c_stops_every_running_trial_and_the_study_resumes(tmp_path: Path, runs_dir: Path) -> None:
    sweep = write_sweep(tmp_path, study="ctrlc", n_trials=2, workers=2)
    process = start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--set", f"overrides.train.max_steps={LONG}"])
    try:
        wait_for(lambda: training_started(runs_dir, 2), 60, "both trials to train")
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 130, output
    wait_for(lambda: not processes_matching(str(runs_dir)), 20, "the trials' workers to stop")

    url = default_storage_url(runs_dir)
    trials = load_study(url, "ctrlc").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING, TrialState.WAITING]
    for trial in trials[:2]:
        assert trial.user_attrs["interrupted"] is True
        status = json.loads((Path(trial.user_attrs["run_dir"]) / "status.json").read_text())
        assert status["status"] == "interrupted" and status["signal"] == "SIGINT"
        assert 0 < status["checkpoint_step"] < LONG
    assert {t.system_attrs["failed_trial"]: t.params for t in trials[2:]} == {0: trials[0].params, 1: trials[1].params}
    assert "resume with the same command" in output

    resumed = run_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir)])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = load_study(url, "ctrlc").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    for trial in trials[2:]:
        assert trial.params == trials[trial.system_attrs["failed_trial"]].params
        summary = summary_of(trial)
        assert trial.value == summary["val/bpb"] and summary["steps"] == SHORT and summary["trial"] == trial.number

    status = run_cli(["sweep", "status", "--runs-dir", str(runs_dir), "--json"])  # the only study: no name needed
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["study"] == "ctrlc" and shown["counts"] == {"FAIL": 2, "COMPLETE": 2}
    assert [row["error"] for row in shown["trials"]] == ["interrupted", "interrupted", None, None]
    assert shown["best"]["value"] == min(t.value for t in trials[2:])
    assert shown["best"]["run_id"] in run_cli(["sweep", "status", "ctrlc", "--runs-dir", str(runs_dir)]).stdout


def test_a_sigkilled_sweep_leaves_no_trial_running_for_ever(tmp_path: Path, runs_dir: Path) -> None:
    sweep = write_sweep(tmp_path, study="killed", n_trials=1, workers=1, retries=1, heartbeat_interval=1, grace_period=2)
    process = start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--set", f"overrides.train.max_steps={LONG}"])
    try:
        wait_for(lambda: training_started(runs_dir, 1), 60, "the trial to train")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        stop(process)
    # The trial's torchrun workers watch their launcher (the sweep) and stop within seconds.
    wait_for(lambda: not processes_matching(str(runs_dir)), 30, "the orphaned trial workers to stop")
    url = default_storage_url(runs_dir)
    [killed] = load_study(url, "killed").get_trials()
    assert killed.state == TrialState.RUNNING  # nobody is left to say otherwise, until its heartbeat is stale
    run_status = json.loads((Path(killed.user_attrs["run_dir"]) / "status.json").read_text())
    assert run_status["status"] == "interrupted" and run_status["signal"] == "launcher gone"

    again = run_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir)])
    assert again.returncode == 0, again.stdout + again.stderr
    first, retry = load_study(url, "killed").get_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params
    assert retry.value == summary_of(retry)["val/bpb"]
    assert "worker lost (no heartbeat)" in again.stdout and "retry of 0" in again.stdout


def test_two_sweep_processes_share_one_postgresql_study(tmp_path: Path, runs_dir: Path) -> None:
    url = os.environ.get("GPTEXP_TEST_POSTGRES_URL")
    if not url:
        skip_or_fail("GPTEXP_TEST_POSTGRES_URL is not set (a PostgreSQL server for sweeps across processes)")
    password = urlsplit(url).password
    assert password and len(password) >= 6
    study = f"pg-{uuid.uuid4().hex[:10]}"
    sweep = write_sweep(tmp_path, study=study, n_trials=4, workers=1)
    env = {"WANDB_MODE": "offline"}  # W&B files in every run directory, to search for the password too
    processes = [
        start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--storage", url], env=env),
        start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir)], env={**env, "GPTEXP_OPTUNA_STORAGE": url}),
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=180)[0])
    finally:
        for process in processes:
            stop(process)
    assert [p.returncode for p in processes] == [0, 0], outputs

    trials = load_study(url, study).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    started = sorted(int(line.split()[1]) for out in outputs for line in out.splitlines() if " started" in line)
    assert started == [0, 1, 2, 3]  # every trial ran once, in one of the two processes
    assert len({t.user_attrs["run_id"] for t in trials}) == 4
    for trial in trials:
        summary = summary_of(trial)
        assert trial.value == summary["val/bpb"]
        assert summary["study"] == study and summary["trial"] == trial.number and summary["status"] == "completed"

    status = run_cli(["sweep", "status", study, "--storage", url, "--json"])
    assert status.returncode == 0 and json.loads(status.stdout)["counts"] == {"COMPLETE": 4}
    outputs.append(status.stdout + status.stderr)

    # The storage password never reaches the run store, the logs, W&B or the printed output.
    files = [path for trial in trials for path in Path(trial.user_attrs["run_dir"]).rglob("*") if path.is_file()]
    assert any("wandb" in path.parts for path in files) and any(path.name == "output.log" for path in files)
    leaks = [str(path) for path in files if password.encode() in path.read_bytes()]
    assert leaks == []
    assert all(password not in out for out in outputs)
    # W&B: group = the study, the trial number in tags and config.
    from tests.wandb_offline import read_offline_run

    for trial in trials:
        (wandb_file,) = Path(trial.user_attrs["run_dir"]).glob("wandb/offline-run-*/run-*.wandb")
        offline = read_offline_run(wandb_file)
        assert offline.group == study and f"trial:{trial.number}" in offline.tags
        assert offline.config["sweep"] == {"study": study, "trial": trial.number}
    assert "***@" in outputs[0]


def test_a_hostile_password_in_any_url_form_never_leaks(tmp_path: Path, runs_dir: Path) -> None:
    """A role whose password holds @ : / ? & = ' and a space, given as `?password=` (percent-encoded)
    and in the userinfo: the sweep runs, and no output, run file, W&B file or status JSON holds it."""
    admin_url = os.environ.get("GPTEXP_TEST_POSTGRES_URL")
    if not admin_url:
        skip_or_fail("GPTEXP_TEST_POSTGRES_URL is not set (a PostgreSQL server for sweeps across processes)")
    import psycopg
    from psycopg import sql
    from urllib.parse import quote

    parts = urlsplit(admin_url)
    role, database = f"sweeper_{uuid.uuid4().hex[:8]}", f"hostile_{uuid.uuid4().hex[:8]}"
    password = f"p@ss:w/rd?&= it's-{uuid.uuid4().hex[:6]}"
    admin = dict(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password, dbname="postgres")
    with psycopg.connect(**admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
    host = f"{parts.hostname}:{parts.port}"
    query_url = f"postgresql+psycopg://{role}@{host}/{database}?password={quote(password, safe='')}"
    userinfo_url = f"postgresql+psycopg://{role}:{quote(password, safe='')}@{host}/{database}"
    forms = {password, quote(password, safe=""), quote(password)}

    sweep = write_sweep(tmp_path, study="hostile", n_trials=1, workers=1)
    outputs = []
    first = run_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--storage", query_url], env={"WANDB_MODE": "offline"})
    outputs.append(first.stdout + first.stderr)
    assert first.returncode == 0, outputs
    assert "password=***" in first.stdout.splitlines()[0]  # the first line names the storage, redacted
    status = run_cli(["sweep", "status", "hostile", "--storage", userinfo_url, "--json"])
    outputs.append(status.stdout + status.stderr)
    assert status.returncode == 0 and json.loads(status.stdout)["storage"].startswith(f"postgresql+psycopg://{role}:***@")
    wrong = run_cli(["sweep", "status", "--storage", query_url.replace("hostile_", "missing_")])
    outputs.append(wrong.stdout + wrong.stderr)
    assert wrong.returncode == 2 and "password=***" in wrong.stderr
    files = [path for path in runs_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files) and any(path.name == "status.json" for path in files)
    leaks = [str(path) for path in files for form in forms if form.encode() in path.read_bytes()]
    assert leaks == []
    assert not [out for out in outputs for form in forms if form in out], outputs


def test_journal_workers_on_one_file_survive_a_sigkilled_worker(tmp_path: Path, runs_dir: Path) -> None:
    """Three `gptexp sweep` processes on one journal file (no database server, no heartbeats); one is
    SIGKILLed mid-trial. Its trial is failed once its run is no longer locked and retried; the study
    reaches its count and no trial stays RUNNING."""
    (tmp_path / "shared").mkdir()
    url = f"journal://{tmp_path}/shared/study.journal"
    sweep = write_sweep(tmp_path, study="journal", n_trials=4, workers=1, retries=1, grace_period=2)
    victim = start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--storage", url,
                        "--set", f"overrides.train.max_steps={LONG}"])
    others: list[subprocess.Popen] = []
    try:
        wait_for(lambda: training_started(runs_dir, 1), 60, "the victim's trial to train")
        others = [start_cli(["sweep", str(sweep), "--runs-dir", str(runs_dir), "--storage", url]) for _ in range(2)]
        wait_for(lambda: len(list(runs_dir.iterdir())) >= 2, 60, "another worker to start a trial")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        outputs = [process.communicate(timeout=300)[0] for process in others]
    finally:
        for process in [victim, *others]:
            stop(process)
    assert [p.returncode for p in others] == [0, 0], outputs

    trials = load_study(url, "journal").get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    [killed] = [t for t in trials if t.state == TrialState.FAIL]
    assert killed.user_attrs["pid"] == victim.pid and killed.user_attrs["error"] == "worker lost (its run is no longer locked)"
    [retry] = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and len(trials) == 5  # n_trials reached; the killed trial counts through its retry
    for trial in complete:
        assert trial.value == summary_of(trial)["val/bpb"]
    assert any(f"trial {killed.number} FAIL: worker lost" in out for out in outputs)
    status = run_cli(["sweep", "status", "journal", "--storage", url, "--json"])
    assert status.returncode == 0 and json.loads(status.stdout)["counts"] == {"FAIL": 1, "COMPLETE": 4}
