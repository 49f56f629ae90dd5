"""Sweeps: the sweep spec, the search space, counting and retrying trials, and real trials in process."""

from __future__ import annotations

import json
import re
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gptexp.spec import SpecError
from gptexp.sweep.pruning import ENV_METRIC, ENV_PRUNER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_TRIAL_ID
from gptexp.sweep.runner import RetryStaleTrial, Sweep, count_trials, open_study, requeue, suggest, trial_budget
from gptexp.sweep.spec import SweepSpec, load_sweep_spec
from gptexp.sweep.storage import default_storage_url
from tests.conftest import REPO_ROOT, TINY_SPEC

SWEEP_FILES = sorted((REPO_ROOT / "sweeps").glob("*.yaml"))


def write_sweep(tmp_path: Path, base: dict | None = None, name: str = "sweep", **fields: Any) -> Path:
    """A tiny experiment and a sweep over it; `fields` replace the sweep's top-level fields."""
    experiment_path = tmp_path / "experiment.yaml"
    experiment_path.write_text(yaml.safe_dump(base or TINY_SPEC), encoding="utf-8")
    sweep = {"experiment": str(experiment_path),
             "space": {"optim.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}},
             "sampler": {"kind": "random", "seed": 0}, "pruner": {"kind": "none"}, "n_trials": 2}
    sweep.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# the sweep spec


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_shipped_sweep_loads_and_names_its_command(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)  # experiment paths are relative to the current directory
    sweep = load_sweep_spec(path.relative_to(REPO_ROOT))
    assert path.read_text().splitlines()[0] == f"# gptexp sweep sweeps/{path.name}"
    assert sweep.study == path.stem
    spec = sweep.build_experiment({})
    assert Path(spec.data.path).is_file()


def test_the_two_mlm_arms_share_space_and_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    char, bpe = load_sweep_spec("sweeps/mlm_char.yaml"), load_sweep_spec("sweeps/mlm_bpe.yaml")
    assert char.space == bpe.space
    assert set(char.space) == {"optim.lr", "optim.weight_decay", "optim.warmup_steps", "model.dropout",
                               "model.n_embd", "model.n_layer"}
    assert char.space["model.n_embd"].type == "categorical"
    for field in ("metric", "direction", "sampler", "n_trials", "workers", "retries"):
        assert getattr(char, field) == getattr(bpe, field), field
    c, b = char.build_experiment({}), bpe.build_experiment({})
    assert (c.tokenizer.kind, b.tokenizer.kind) == ("char", "bpe")
    assert b.tokenizer.vocab_size == 2048 and b.tokenizer.pattern == "gpt4"
    assert c.objective.kind == b.objective.kind == "mlm" and c.objective.mask_unit == b.objective.mask_unit == "word"
    tokens_per_byte = 0.3168  # gpt4 BPE at vocab 2048 on the train split (measured; see the YAML comment)
    char_bytes = c.train.max_steps * c.train.batch_size * c.model.block_size
    bpe_bytes = b.train.max_steps * b.train.batch_size * b.model.block_size / tokens_per_byte
    assert abs(char_bytes - bpe_bytes) / char_bytes < 0.01


def test_space_types_are_inferred_and_overrides_take_both_forms(tmp_path: Path) -> None:
    listed = load_sweep_spec(write_sweep(tmp_path, name="a", overrides=["train.max_steps=7", "model.n_layer=1"],
                                         space={"optim.lr": {"low": 1.0e-3, "high": 0.1, "log": True},
                                                "train.batch_size": {"low": 4, "high": 16, "step": 4},
                                                "model.n_embd": {"choices": [32, 64]}}))
    mapped = load_sweep_spec(write_sweep(tmp_path, name="b", overrides={"train": {"max_steps": 7}, "model.n_layer": 1},
                                         space={"optim.lr": {"low": 1.0e-3, "high": 0.1, "log": True}}))
    assert [p.type for p in listed.space.values()] == ["float", "int", "categorical"]
    assert listed.study == "a" and listed.pruner.kind == "none"
    for sweep in (listed, mapped):
        spec = sweep.build_experiment({"optim.lr": 0.005})
        assert spec.train.max_steps == 7 and spec.model.n_layer == 1 and spec.optim.lr == 0.005
    spec = listed.build_experiment({"optim.lr": 1.0e-5 * 3, "train.batch_size": 12, "model.n_embd": 64})
    assert spec.optim.lr == 1.0e-5 * 3 and spec.train.batch_size == 12  # floats pass through exactly and spec.model.n_embd == 64


@pytest.mark.parametrize("fields, message", [
    ({"space": {"model.n_embdd": {"choices": [32, 64]}}}, "sweep.yaml: space.model.n_embdd: not a field of the experiment spec"),
    ({"space": {"train.max_steps.x": {"low": 1, "high": 2}}}, "sweep.yaml: space.train.max_steps.x: not a field"),
    ({"space": {"tokenizer.vocab_size": {"low": 300, "high": 400}}}, "space.tokenizer.vocab_size: not a field"),
    ({"space": {"model.n_embd": {"choices": [32, 33]}}}, "space.model.n_embd: value 33 makes the experiment invalid: model: n_embd (33) must be divisible by n_head (2)"),
    ({"space": {"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}}, "sweep.yaml: space.optim.lr: log needs low > 0 (got 0.0)"),
    ({"space": {"optim.lr": {"low": 0.1, "high": 0.01}}}, "space.optim.lr: low (0.1) must not exceed high"),
    ({"space": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.2, "choices": [1]}}}, "space.optim.lr.choices: unknown field"),
    ({"space": {}}, "sweep.yaml: space: Dictionary should have at least 1 item"),
    ({"sampler": {"kind": "grid"}}, "sweep.yaml: sampler.kind: grid needs categorical or stepped params; space.optim.lr is a float without step"),
    ({"sampler": {"kind": "bayes"}}, "sweep.yaml: sampler.kind: Input should be"),
    ({"pruner": {"kind": "median", "min_resource": 3}}, "sweep.yaml: pruner.min_resource: unknown field"),
    ({"pruner": {"kind": "hyperband", "reduction_factor": 1}}, "sweep.yaml: pruner.reduction_factor: Input should be greater than or equal to 2"),
    ({"metric": "train/loss"}, "sweep.yaml: metric: Input should be"),
    ({"n_trials": 0}, "sweep.yaml: n_trials: Input should be greater than 0"),
    ({"experiment": "no/such/spec.yaml"}, "sweep.yaml: experiment: no/such/spec.yaml: file not found"),
    ({"overrides": ["model.n_head=3"]}, "sweep.yaml: overrides: model: n_embd (32) must be divisible by n_head (3)"),
    ({"overrides": ["train.max_steps.deep=1"]}, "overrides: 'train.max_steps.deep=1': train.max_steps is a value"),
    ({"workers": "two"}, "sweep.yaml: workers: Input should be a valid integer"),
    ({"overrides": ["launch.nnodes=2"]}, "sweep.yaml: launch.nnodes: a sweep trial runs on one node"),
    ({"workers": 65}, "sweep.yaml: workers: Input should be less than or equal to 64"),
    ({"study": "s" * 59}, "sweep.yaml: study: 59 characters ('ssssssssssssssss'...); at most 58, because trials are tagged study:<study>"),
    ({"study": "two\nlines"}, "sweep.yaml: study: group 'two\\nlines' contains a newline"),
])
def test_bad_sweep_files_are_one_clear_spec_error(tmp_path: Path, fields: dict, message: str) -> None:
    path = write_sweep(tmp_path, **fields)
    with pytest.raises(SpecError) as error:
        load_sweep_spec(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize("seed, message", [
    (2**32, "sweep.yaml: sampler.seed: Input should be less than or equal to 4294967295"),
    (-1, "sweep.yaml: sampler.seed: Input should be greater than or equal to 0"),
])
def test_an_out_of_range_sampler_seed_is_a_one_line_spec_error(tmp_path: Path, seed: int, message: str) -> None:
    """Optuna hands the seed to numpy, which takes 0 to 2**32 - 1: outside it a study would fail to start."""
    path = write_sweep(tmp_path, sampler={"kind": "random", "seed": seed})
    with pytest.raises(SpecError) as error:
        load_sweep_spec(path)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert load_sweep_spec(write_sweep(tmp_path, sampler={"kind": "tpe", "seed": 2**32 - 1})).sampler.seed == 2**32 - 1


def test_study_names_from_flags_and_file_names_meet_wandb_limits(tmp_path: Path) -> None:
    """W&B refuses tags over 64 characters: before the fix such a sweep failed inside every trial."""
    path = write_sweep(tmp_path)
    assert load_sweep_spec(path, study="s" * 58).study == "s" * 58  # the tag study:sss... is 64 characters
    with pytest.raises(SpecError, match=re.escape("--study: 59 characters ('ssssssssssssssss'...); at most 58")):
        load_sweep_spec(path, study="s" * 59)
    with pytest.raises(SpecError, match="^--study: must not be empty"):
        load_sweep_spec(path, study="  ")
    long_name = tmp_path / f"{'x' * 60}.yaml"
    long_name.write_text(path.read_text())
    with pytest.raises(SpecError, match="study: 60 characters"):
        load_sweep_spec(long_name)  # the default study name is the file's name


def test_grid_accepts_categorical_int_and_stepped_float_and_caps_n_trials(tmp_path: Path) -> None:
    sweep = load_sweep_spec(write_sweep(tmp_path, sampler={"kind": "grid"}, n_trials=50, space={
        "optim.lr": {"low": 0.001, "high": 0.003, "step": 0.001},
        "model.n_layer": {"low": 1, "high": 2},
        "model.n_embd": {"choices": [32, 64]},
    }))
    grid = sweep.grid()
    assert grid["model.n_layer"] == [1, 2] and grid["model.n_embd"] == [32, 64]
    assert [round(v, 6) for v in grid["optim.lr"]] == [0.001, 0.002, 0.003]
    assert trial_budget(sweep) == 12


# ---------------------------------------------------------------------------------------------
# the space, the budget and retries (in-memory studies: no runs)


def test_suggest_turns_each_param_into_its_distribution() -> None:
    sweep = SweepSpec.model_validate({"experiment": "x.yaml", "space": {
        "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "model.dropout": {"low": 0.0, "high": 0.2, "step": 0.05},
        "model.n_layer": {"low": 2, "high": 6, "step": 2},
        "model.n_embd": {"choices": [64, 128]},
    }})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        values = suggest(trial, sweep.space)
        assert 1.0e-4 <= values["optim.lr"] <= 1.0e-2
        assert values["model.n_layer"] in (2, 4, 6) and values["model.n_embd"] in (64, 128)
        assert any(math.isclose(values["model.dropout"], k * 0.05) for k in range(5))
        study.tell(trial, 1.0)
    distributions = study.trials[0].distributions
    assert distributions["optim.lr"] == FloatDistribution(1.0e-4, 1.0e-2, log=True)
    assert distributions["model.dropout"] == FloatDistribution(0.0, 0.2, step=0.05)
    assert distributions["model.n_layer"] == IntDistribution(2, 6, step=2)
    assert distributions["model.n_embd"] == CategoricalDistribution([64, 128])


def test_a_requeued_failure_counts_once_and_retries_stop_at_the_limit() -> None:
    study = optuna.create_study()
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)
    assert vars(count_trials(study)) == {"counted": 1, "waiting": 0, "running": 0}
    assert requeue(study, study.trials[0], max_retry=1)
    assert vars(count_trials(study)) == {"counted": 1, "waiting": 1, "running": 0}
    retry = study.ask()  # takes the queued trial, with the failed trial's params
    assert retry.number == 1 and retry.params == study.trials[0].params
    study.tell(retry, state=TrialState.FAIL)
    assert not requeue(study, study.trials[1], max_retry=1)  # its one retry is used up
    assert study.trials[1].system_attrs["retry_history"] == [0]
    assert vars(count_trials(study)) == {"counted": 1, "waiting": 0, "running": 0}
    assert requeue(study, study.trials[1], max_retry=None)  # interrupted trials are always queued again
    assert study.trials[2].system_attrs["retry_history"] == [0, 1]
    assert study.trials[2].system_attrs["failed_trial"] == 0


def test_a_stale_trial_is_queued_again_only_while_retries_remain() -> None:
    study = optuna.create_study()
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(trial, state=TrialState.FAIL)  # what fail_stale_trials does to a trial without heartbeat
    RetryStaleTrial(max_retry=0)(study, study.trials[0])
    assert len(study.trials) == 1
    RetryStaleTrial(max_retry=2)(study, study.trials[0])
    assert study.trials[1].state == TrialState.WAITING and study.trials[1].params == study.trials[0].params


def test_trial_spec_and_env_carry_study_trial_and_storage_only_in_env(tmp_path: Path) -> None:
    sweep = load_sweep_spec(write_sweep(tmp_path, study="mine", workers=2, overrides=["launch.nproc=2", "tracking.wandb.tags=[base]"]))
    runner = Sweep(sweep, tmp_path / "runs", storage_url="postgresql+psycopg://u:s3cret-pw@h/db", cpus=2)
    spec = runner.trial_spec(5, {"optim.lr": 0.004})
    assert spec.name == "mine-t5" and spec.tracking.wandb.group == "mine"
    assert spec.tracking.wandb.tags == ["base", "study:mine", "trial:5"]
    assert spec.launch.nproc == 1  # 2 workers x 2 ranks would oversubscribe 2 CPUs
    assert spec.launch.run_id and spec.launch.run_id.startswith("mine-t5-")
    assert "s3cret-pw" not in spec.to_yaml()

    class FakeTrial:
        number, _trial_id = 5, 42

    env = runner.trial_env(FakeTrial(), spec)  # type: ignore[arg-type]
    assert env[ENV_TRIAL] == "5" and env[ENV_TRIAL_ID] == "42" and env[ENV_STUDY] == "mine"
    assert env[ENV_STORAGE] == "postgresql+psycopg://u:s3cret-pw@h/db" and env[ENV_METRIC] == "val/bpb"
    assert json.loads(env[ENV_PRUNER]) == {"kind": "none"}
    assert env["OMP_NUM_THREADS"] == "1"


def test_a_loaded_study_must_agree_on_direction_and_metric(tmp_path: Path) -> None:
    url = default_storage_url(tmp_path)
    open_study(load_sweep_spec(write_sweep(tmp_path, study="s")), url)
    with pytest.raises(SpecError, match="direction: maximize, but study 's' .* was created to minimize"):
        open_study(load_sweep_spec(write_sweep(tmp_path, study="s", direction="maximize")), url)
    with pytest.raises(SpecError, match="metric: val/loss, but study 's' .* optimizes val/bpb"):
        open_study(load_sweep_spec(write_sweep(tmp_path, study="s", metric="val/loss")), url)


# ---------------------------------------------------------------------------------------------
# real trials (torchrun runs), in process


@pytest.mark.slow
def test_trials_are_runs_and_failed_runs_fail_their_trial_and_are_retried(tmp_path: Path, runs_dir: Path) -> None:
    """Two workers, a grid over a good lr and an lr that makes the loss NaN (the run exits 1)."""
    experiment = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    experiment["train"].update(max_steps=20, eval_every=10, checkpoint_every=20)
    sweep = load_sweep_spec(write_sweep(tmp_path, experiment, study="t", workers=2, n_trials=2, retries=1,
                                        sampler={"kind": "grid", "seed": 0},
                                        space={"optim.lr": {"choices": [3.0e-3, 1.0e+6]}}))
    lines: list[str] = []
    result = Sweep(sweep, runs_dir, log=lines.append).run()
    # The NaN trial failed and so did its retry: the study is full, but the sweep is no success.
    assert result.exit_code == 1, lines
    assert len(result.failed) == 1 and "train/loss became nan" in result.failed[0], result.failed
    assert "1 trial(s) failed after their retries: trial " in lines[-1]

    study = optuna.load_study(study_name="t", storage=default_storage_url(runs_dir))
    trials = {t.number: t for t in study.trials}
    assert len(trials) == 3, lines  # the good trial, the NaN trial and its one retry
    good = [t for t in trials.values() if t.params["optim.lr"] == 3.0e-3]
    bad = sorted((t for t in trials.values() if t.params["optim.lr"] == 1.0e6), key=lambda t: t.number)
    assert len(good) == 1 and len(bad) == 2
    assert good[0].state == TrialState.COMPLETE
    summary = json.loads((Path(good[0].user_attrs["run_dir"]) / "summary.json").read_text())
    assert good[0].value == summary["val/bpb"]
    assert summary["study"] == "t" and summary["trial"] == good[0].number and summary["steps"] == 20
    assert summary["group"] == "t"
    assert [t.state for t in bad] == [TrialState.FAIL, TrialState.FAIL]
    assert bad[1].system_attrs["failed_trial"] == bad[0].number  # the retry, with the same params
    for trial in bad:
        assert "train/loss became nan" in trial.user_attrs["error"]
        assert json.loads((Path(trial.user_attrs["run_dir"]) / "status.json").read_text())["status"] == "failed"
    run_dirs = {t.user_attrs["run_dir"] for t in trials.values()}
    assert len(run_dirs) == 3
    for trial in trials.values():
        run_dir = Path(trial.user_attrs["run_dir"])
        assert run_dir.parent == runs_dir.resolve() and trial.user_attrs["run_id"] == run_dir.name
        assert (run_dir / "output.log").stat().st_size > 0  # each trial's output in its own file
        spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
        assert spec["tracking"]["wandb"]["tags"] == ["study:t", f"trial:{trial.number}"]
    assert vars(count_trials(study)) == {"counted": 2, "waiting": 0, "running": 0}

    # A second call resumes the study: it is full (n_trials counts all its trials), so no new trial.
    again = Sweep(sweep, runs_dir, log=lines.append).run()
    assert again.exit_code == 0 and again.started == 0 and again.failed == []  # it ran nothing that failed
    assert len(study.trials) == 3
