"""The pruning bridge: the trainer's rank 0 reports to the sweep's trial through the storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from gptexp.launch import EXIT_PRUNED, exit_code_for
from gptexp.sweep.pruning import (ENV_METRIC, ENV_PRUNER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_TRIAL_ID,
                                  PruningBridge, build_pruner)
from gptexp.sweep.runner import Sweep
from gptexp.sweep.spec import load_sweep_spec
from gptexp.sweep.storage import default_storage_url, open_storage
from gptexp.tracking import RunStore
from tests.conftest import TINY_SPEC


def test_build_pruner_rebuilds_each_kind_with_its_settings() -> None:
    median = build_pruner({"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 30, "interval_steps": 10})
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps, median._interval_steps) == (2, 30, 10)
    hyperband = build_pruner({"kind": "hyperband", "min_resource": 20, "max_resource": 200, "reduction_factor": 2})
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (20, 200, 2)
    assert isinstance(build_pruner({"kind": "none"}), optuna.pruners.NopPruner)


def study_with_finished_trials(url: str, name: str) -> optuna.Study:
    """Two completed trials whose val/bpb was 3.0 at steps 10 and 20."""
    study = optuna.create_study(study_name=name, storage=open_storage(url))
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=2.5,
            intermediate_values={10: 3.0, 20: 3.0}))
    return study


def set_trial_env(monkeypatch: pytest.MonkeyPatch, url: str, study: str, trial: optuna.Trial, pruner: dict) -> None:
    monkeypatch.setenv(ENV_STORAGE, url)
    monkeypatch.setenv(ENV_STUDY, study)
    monkeypatch.setenv(ENV_TRIAL, str(trial.number))
    monkeypatch.setenv(ENV_TRIAL_ID, str(trial._trial_id))
    monkeypatch.setenv(ENV_METRIC, "val/bpb")
    monkeypatch.setenv(ENV_PRUNER, json.dumps(pruner))


def test_rank_zero_reports_and_prunes_with_the_sweeps_pruner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = default_storage_url(tmp_path)
    study = study_with_finished_trials(url, "p")
    trial = study.ask()  # the sweep's process creates the trial; the run's rank 0 reports to it
    set_trial_env(monkeypatch, url, "p", trial, {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 15})

    bridge = PruningBridge.from_environment(is_main=True)
    metrics = {"val/loss": 9.0, "val/bpb": 4.0, "val/acc": 0.1}
    assert bridge.should_prune(10, metrics) is False  # worse than the median, but still warming up
    assert bridge.should_prune(20, {**metrics, "val/bpb": 2.0}) is False  # better than the median
    assert bridge.should_prune(30, metrics) is False  # no other trial reached step 30
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.intermediate_values == {10: 4.0, 20: 2.0, 30: 4.0}

    other = study.ask()
    set_trial_env(monkeypatch, url, "p", other, {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 15})
    assert PruningBridge.from_environment(is_main=True).should_prune(20, metrics) is True
    assert study._storage.get_trial(other._trial_id).intermediate_values == {20: 4.0}


def test_other_ranks_never_touch_the_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_STORAGE, "postgresql+psycopg://nobody:pw@127.0.0.1:1/none")  # would fail to connect
    monkeypatch.setenv(ENV_STUDY, "s")
    monkeypatch.setenv(ENV_TRIAL_ID, "1")
    bridge = PruningBridge.from_environment(is_main=False)
    assert bridge.trial is None
    assert bridge.should_prune(10, {"val/bpb": 1.0}) is False


def test_a_bridge_that_cannot_reach_its_trial_fails_without_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = default_storage_url(tmp_path)
    optuna.create_study(study_name="exists", storage=open_storage(url))
    monkeypatch.setenv(ENV_STORAGE, url)
    monkeypatch.setenv(ENV_STUDY, "missing-study")
    monkeypatch.setenv(ENV_TRIAL_ID, "0")
    with pytest.raises(RuntimeError, match="cannot reach the sweep's trial: KeyError"):
        PruningBridge.from_environment(is_main=True)
    monkeypatch.setenv(ENV_STORAGE, "postgresql+psycopg://user:hunter2-secret@127.0.0.1:1/db")
    with pytest.raises(RuntimeError) as error:
        PruningBridge.from_environment(is_main=True)
    assert "hunter2-secret" not in str(error.value)


@pytest.mark.slow
def test_a_pruned_run_exits_3_and_its_trial_is_pruned(tmp_path: Path, runs_dir: Path) -> None:
    """Trial 0 (a good lr) completes; trial 1 (an lr too small to learn) is pruned at its first eval."""
    experiment = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    experiment["train"].update(max_steps=40, eval_every=10, checkpoint_every=40)
    experiment["optim"]["min_lr"] = 0.0
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment))
    sweep_path = tmp_path / "prune.yaml"
    sweep_path.write_text(yaml.safe_dump({
        "experiment": str(tmp_path / "experiment.yaml"),
        "space": {"optim.lr": {"low": 1.0e-7, "high": 1.0e-2, "log": True}},
        "pruner": {"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 10},
        "n_trials": 2, "workers": 1,
    }))
    sweep = load_sweep_spec(sweep_path)
    study = optuna.create_study(study_name="prune", storage=open_storage(default_storage_url(runs_dir)))
    study.enqueue_trial({"optim.lr": 3.0e-3})
    study.enqueue_trial({"optim.lr": 1.0e-7})
    lines: list[str] = []
    assert Sweep(sweep, runs_dir, log=lines.append).run().exit_code == 0

    good, bad = sorted(study.get_trials(), key=lambda t: t.number)
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED, lines
    assert sorted(good.intermediate_values) == [10, 20, 30, 40]  # every eval was reported
    assert sorted(bad.intermediate_values) == [10]  # pruned at the first eval past the warm-up
    assert bad.intermediate_values[10] > good.intermediate_values[10]

    run_dir = Path(bad.user_attrs["run_dir"])
    status = json.loads((run_dir / "status.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert status["status"] == "pruned" and summary["status"] == "pruned"
    assert summary["steps"] == 10 and bad.user_attrs["steps"] == 10
    assert summary["val/bpb"] == bad.intermediate_values[10]
    assert exit_code_for(RunStore(run_dir)) == (EXIT_PRUNED, "pruned")  # `gptexp run` would exit 3
    assert good.value == json.loads((Path(good.user_attrs["run_dir"]) / "summary.json").read_text())["val/bpb"]

