"""The sweep file: which experiment, what to vary (the search space as data), how to search.

`load_sweep_spec` validates a sweep file, its base experiment and every path of its space before
any trial runs, so a bad sweep is a SpecError (exit 2) naming the file and the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from gptexp import contract as C
from gptexp import limits
from gptexp.spec import (ExperimentSpec, PositiveInt, Section, SpecError, apply_overrides, format_validation_error,
                         read_yaml_file, resolve_paths, validate_spec)

class FloatParam(Section):
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = Field(False, description="sample on a log scale (low must be > 0)")
    step: float | None = Field(None, gt=0.0, description="discretization step (not with log)")

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log, self.step is not None)
        return self


class IntParam(Section):
    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = Field(False, description="sample on a log scale (low must be >= 1)")
    step: PositiveInt = Field(1, description="values low, low + step, ... <= high (step > 1 not with log)")

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log, self.step != 1)
        return self


class CategoricalParam(Section):
    type: Literal["categorical"] = "categorical"
    choices: list[str | int | float | bool | None] = Field(min_length=1, description="the values to choose from")

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len({repr(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices must be unique")
        return self


def _check_bounds(low: float, high: float, log: bool, stepped: bool) -> None:
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0 (got {low})")
    if log and stepped:
        raise ValueError("log and step cannot be combined")


SpaceParam = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SamplerSpec(Section):
    kind: Literal["tpe", "random", "grid", "cmaes"] = Field("tpe", description="grid needs categorical, int or stepped float params; cmaes needs the `cmaes` package")
    seed: int | None = Field(None, ge=0, le=limits.MAX_SAMPLER_SEED, description=f"sampler seed (0 to {limits.MAX_SAMPLER_SEED}): a new study run by one process with workers: 1 is reproducible; a process that resumes or joins a study reseeds at random")


class MedianPrunerSpec(Section):
    kind: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="trials that finish before any pruning")
    n_warmup_steps: int = Field(0, ge=0, description="training steps before a trial can be pruned")
    interval_steps: PositiveInt = Field(1, description="prune only at steps n_warmup_steps + k * interval_steps")


class HyperbandPrunerSpec(Section):
    kind: Literal["hyperband"] = "hyperband"
    min_resource: PositiveInt = Field(1, description="training steps every trial gets before the first rung")
    max_resource: PositiveInt | Literal["auto"] = Field("auto", description="training steps of a full trial (auto: from finished trials)")
    reduction_factor: int = Field(3, ge=2, description="1 / reduction_factor of the trials go on at each rung")


class NoPrunerSpec(Section):
    kind: Literal["none"] = "none"


PrunerSpec = Annotated[MedianPrunerSpec | HyperbandPrunerSpec | NoPrunerSpec, Field(discriminator="kind")]
SweepMetric = Literal[C.VAL_BPB, C.VAL_LOSS, C.VAL_ACC]  # type: ignore[valid-type]  # the names, from the contract

# Each worker is a thread waiting on its own torchrun (one or more processes): beyond a few dozen a
# machine thrashes, and a typo (`--workers 1000`) would start that many trainings at once.
MAX_WORKERS = 64

# A study names its trials' W&B group (`<study>`), tags (`study:<study>`, `trial:<n>`) and run names
# (`<study>-t<n>`); gptexp.limits holds W&B's limits (and their sources). The tag is the tightest.
STUDY_TAG_PREFIX, TRIAL_TAG_PREFIX = "study:", "trial:"
MAX_STUDY_NAME_LENGTH = limits.WANDB_MAX_TAG_LENGTH - len(STUDY_TAG_PREFIX)


def check_study_name(name: str, where: str) -> None:
    """A SpecError if W&B would refuse a name the sweep derives from study `name` (inside every trial,
    after the runs had started: issue 10 saw such sweeps fail every trial and still exit 0)."""
    if not name.strip():
        raise SpecError(f"{where}: must not be empty")
    if len(name) > MAX_STUDY_NAME_LENGTH:
        raise SpecError(f"{where}: {len(name)} characters ({name[:16]!r}...); at most {MAX_STUDY_NAME_LENGTH}, "
                        f"because trials are tagged {STUDY_TAG_PREFIX}<study> and W&B accepts tags of at most "
                        f"{limits.WANDB_MAX_TAG_LENGTH}")
    try:  # the names a trial gets, through the same checks as an experiment spec's
        limits.check_wandb_name(name, "group")
        limits.check_wandb_tags([f"{STUDY_TAG_PREFIX}{name}"])
        limits.check_wandb_name(f"{name}-t{10**9}", "name")
    except ValueError as error:
        raise SpecError(f"{where}: {error}") from None

class SweepSpec(Section):
    """A sweep file: which experiment, what to vary, how to search, how much to spend."""

    experiment: str = Field(description="the base experiment spec; a relative path is from the current directory, like data.path")
    overrides: list[str] | dict[str, Any] = Field(default_factory=list, description="changes to the base spec for every trial: [k=v, ...] or {dotted.key: value}")
    space: dict[str, SpaceParam] = Field(min_length=1, description="dotted spec path -> {type: float|int|categorical, low, high, log, step, choices}; type is inferred when left out")
    metric: SweepMetric = Field(C.VAL_BPB, description="the run's final value of this metric (summary.json) is the trial's value; reported at every eval for pruning")
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=MedianPrunerSpec)
    n_trials: PositiveInt = Field(20, description="trials in the study in total (a retried trial counts once); a grid is capped at its size")
    timeout: float | None = Field(None, gt=0, description="seconds after which this process starts no new trial")
    workers: PositiveInt = Field(1, le=MAX_WORKERS, description=f"trials run at once by this process (1 to {MAX_WORKERS})")
    study: str | None = Field(None, min_length=1, description=f"Optuna study name, also the trials' W&B group and `study:<name>` tag, so at most {MAX_STUDY_NAME_LENGTH} characters (default: the sweep file's name)")
    storage: str | None = Field(None, description="Optuna storage URL (default: sqlite under the runs directory); never written to runs")
    retries: int = Field(1, ge=0, description="times a failed trial (run failed, or its worker died) is run again with the same params")
    heartbeat_interval: PositiveInt = Field(10, description="seconds between a running trial's heartbeats in the storage")
    grace_period: PositiveInt = Field(60, description="seconds without heartbeat after which a running trial is failed (its worker died)")

    _source: Path = PrivateAttr(default_factory=lambda: Path("sweep.yaml"))
    _base: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _infer_kinds(cls, raw: Any) -> Any:
        """`space: {optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}}` is a float; choices make a categorical."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        if isinstance(raw.get("pruner"), dict) and "kind" not in raw["pruner"]:
            raw["pruner"] = {"kind": "median", **raw["pruner"]}
        if isinstance(raw.get("space"), dict):
            space = {}
            for key, param in raw["space"].items():
                if isinstance(param, dict) and "type" not in param:
                    if "choices" in param:
                        param = {"type": "categorical", **param}
                    elif all(isinstance(param.get(b), int) and not isinstance(param.get(b), bool) for b in ("low", "high")):
                        param = {"type": "int", **param}
                    else:
                        param = {"type": "float", **param}
                space[key] = param
            raw["space"] = space
        return raw

    def check_grid(self) -> None:
        """A grid needs categorical, int or stepped float params (a SpecError names the first other)."""
        if self.sampler.kind != "grid":
            return
        for key, param in self.space.items():
            if isinstance(param, FloatParam) and param.step is None:
                raise SpecError(f"{self._source}: sampler.kind: grid needs categorical or stepped params; "
                                f"space.{key} is a float without step")

    @property
    def source(self) -> Path:
        return self._source

    def grid(self) -> dict[str, list[Any]]:
        """The grid a GridSampler walks: every categorical choice, every step of a numeric param."""
        grid: dict[str, list[Any]] = {}
        for key, param in self.space.items():
            if isinstance(param, CategoricalParam):
                grid[key] = list(param.choices)
            elif isinstance(param, IntParam):
                grid[key] = list(range(param.low, param.high + 1, param.step))
            else:
                assert param.step is not None, "checked by check_grid"
                count = int(round((param.high - param.low) / param.step)) + 1
                grid[key] = [param.low + i * param.step for i in range(count) if param.low + i * param.step <= param.high + 1e-12]
        return grid

    def experiment_raw(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The base experiment (with `overrides`) as a raw mapping, with `values` set at their paths."""
        return _set_values(self._base, values or {}, f"{self._source}: space")

    def build_experiment(self, values: dict[str, Any]) -> ExperimentSpec:
        """The experiment a trial runs: base spec + overrides + the sampled `values`, validated."""
        raw = self.experiment_raw(values)
        try:
            spec = ExperimentSpec.model_validate(raw)
        except ValidationError as error:
            raise SpecError(format_validation_error(error, f"{self._source}: trial values {values}")) from None
        return resolve_paths(spec)


def _set_values(raw: dict[str, Any], values: dict[str, Any], source: str) -> dict[str, Any]:
    """`raw` with each dotted path set to its (already parsed) value, through apply_overrides."""
    overrides = [f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}" for path, value in values.items()]
    return apply_overrides(raw, overrides, source=source)


def _dotted_leaves(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"model": {"n_layer": 1}, "train.max_steps": 9}` -> `{"model.n_layer": 1, "train.max_steps": 9}`"""
    leaves: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves.update(_dotted_leaves(value, f"{path}."))
        else:
            leaves[path] = value
    return leaves


def _representative_values(param: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    return [param.low, param.high] if param.low != param.high else [param.low]


def _first_problem(error: ValidationError) -> str:
    return format_validation_error(error, "").splitlines()[0].removeprefix(": ")


def load_sweep_spec(path: str | os.PathLike[str], overrides: list[str] | None = None, *,
                    study: str | None = None, storage: str | None = None) -> SweepSpec:
    """Load and validate a sweep file, its base experiment and every path of its space; `study`
    and `storage` (command-line flags) replace the file's.

    A space path is checked by building the experiment with each of its bounds (every choice of a
    categorical): a path that is not a spec field, or a value the spec rejects, is a SpecError
    naming the sweep file and `space.<path>`.
    """
    path = Path(path)
    raw = apply_overrides(read_yaml_file(path), overrides or [])
    try:
        sweep = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, str(path))) from None
    sweep._source = path
    if study is not None:
        sweep.study = study
    elif sweep.study is None:
        sweep.study = path.stem
    check_study_name(sweep.study, f"{path}: study" if study is None else "--study")
    if storage is not None:
        sweep.storage = storage
    sweep.check_grid()
    if sweep.sampler.kind == "cmaes":
        import importlib.util

        if importlib.util.find_spec("cmaes") is None:
            raise SpecError(f"{path}: sampler.kind: cmaes needs the 'cmaes' package (pip install cmaes)")

    experiment_path = Path(sweep.experiment).expanduser()
    try:
        base = read_yaml_file(experiment_path)
    except SpecError as error:
        raise SpecError(f"{path}: experiment: {error}") from None
    validate_spec(base, str(experiment_path))
    if isinstance(sweep.overrides, dict):
        base = _set_values(base, _dotted_leaves(sweep.overrides), f"{path}: overrides:")
    else:
        base = apply_overrides(base, sweep.overrides, source=f"{path}: overrides:")
    try:
        base_spec = ExperimentSpec.model_validate(base)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, f"{path}: overrides")) from None
    if base_spec.launch.nnodes > 1 or "launch.nnodes" in sweep.space:
        raise SpecError(f"{path}: launch.nnodes: a sweep trial runs on one node (start a `gptexp sweep` on each machine instead)")
    sweep._base = base

    for key, param in sweep.space.items():
        if any(not part for part in key.split(".")):
            raise SpecError(f"{path}: space.{key}: expected a dotted spec path such as optim.lr")
        for value in _representative_values(param):
            try:
                trial_raw = _set_values(base, {key: value}, f"{path}: space.{key}:")
            except SpecError:
                raise SpecError(f"{path}: space.{key}: not a field of the experiment spec") from None
            try:
                ExperimentSpec.model_validate(trial_raw)
            except ValidationError as error:
                if any(p["type"] == "extra_forbidden" for p in error.errors()):
                    raise SpecError(f"{path}: space.{key}: not a field of the experiment spec") from None
                raise SpecError(f"{path}: space.{key}: value {value!r} makes the experiment invalid: {_first_problem(error)}") from None
    return sweep
