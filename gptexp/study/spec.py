"""The study file: a base experiment, the arms that change parts of it, and how they are compared.

    name: mlm_bpe_vs_char
    seed: 1337                 # draws the frozen evaluation set's hidden words
    seeds: [1, 2, 3]           # training seeds, shared by every arm (paired differences)
    base: {...}                # an experiment spec (gptexp run's format) shared by every arm
    arms:
      char_word: {seeds: 3, set: {tokenizer: {kind: char}, model: {block_size: 128},
                                  objective: {mask_unit: word}}}
    tune: {grid: {optim.lr: [1.0e-3, 2.0e-3]}, steps_fraction: 0.33, dev_fraction: 0.05}
    evaluation: {hidden_fraction: 0.15, held_out: [{name: sonnets, path: data/x.txt}]}
    budget: {context_bytes_tolerance: 0.25}

An arm's spec is `base` deep-merged with the arm's `set`. A study is refused (SpecError, exit 2)
when an arm is not a valid masked-LM experiment, or when arms differ in what must be equal for a
fair comparison: the data, the split pattern, the training steps, batch size and accumulation.
The bytes of context per window are checked once the tokenizers exist (runner.py).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from gptexp.spec import ExperimentSpec, Section, SpecError, format_validation_error, read_yaml_file

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,31}$")  # run ids are built from these names
MASKED_OBJECTIVES = ("mlm", "mntp")


class ArmSpec(Section):
    seeds: int = Field(..., ge=1, description="how many of the study's seeds this arm trains (the first n)")
    set: dict[str, Any] = Field(default_factory=dict, description="parts of the base spec this arm changes")


class TuneSpec(Section):
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted spec key -> values; every combination is tried")
    steps_fraction: float = Field(0.33, gt=0.0, le=1.0, description="share of train.max_steps a tuning run trains")
    dev_fraction: float = Field(0.05, gt=0.0, lt=0.5, description="end share of the training text that tuning selects on")

    @field_validator("grid")
    @classmethod
    def _values_given(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"grid.{key}: give at least one value")
        return grid


class HeldOutText(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_]{1,32}$")
    path: str


class EvaluationSpec(Section):
    hidden_fraction: float = Field(0.15, gt=0.0, lt=1.0, description="share of words hidden (at least one per span)")
    held_out: list[HeldOutText] = Field(default_factory=list, description="extra texts scored once at the end")
    max_spans: int | None = Field(None, gt=0, description="score only the first N spans (smoke studies); None = all")


class BudgetSpec(Section):
    context_bytes_tolerance: float = Field(0.25, gt=0.0, description="arms' bytes of context may differ by this share")


class StudySpec(Section):
    name: str
    seed: int = 1337
    seeds: list[int] = Field(..., min_length=1)
    base: dict[str, Any]
    arms: dict[str, ArmSpec] = Field(..., min_length=2)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)

    @field_validator("name")
    @classmethod
    def _name_is_an_id(cls, name: str) -> str:
        if not NAME_PATTERN.match(name):
            raise ValueError("letters, digits and '_' only, at most 32 characters (run ids are built from it)")
        return name

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: dict[str, ArmSpec]) -> dict[str, ArmSpec]:
        for name in arms:
            if not NAME_PATTERN.match(name) or len(name) > 20:
                raise ValueError(f"arm {name!r}: letters, digits and '_' only, at most 20 characters")
        return arms

    @model_validator(mode="after")
    def _seeds(self) -> StudySpec:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        for name, arm in self.arms.items():
            if arm.seeds > len(self.seeds):
                raise ValueError(f"arms.{name}.seeds: {arm.seeds} but the study lists {len(self.seeds)} seeds")
        return self

    # -- the arms' experiment specs -----------------------------------------------------------
    def arm_raw(self, arm: str) -> dict[str, Any]:
        merged = deep_merge(self.base, self.arms[arm].set)
        merged["name"] = f"{self.name}-{arm}"
        return merged

    def arm_spec(self, arm: str, overrides: dict[str, Any] | None = None) -> ExperimentSpec:
        raw = self.arm_raw(arm)
        for key, value in (overrides or {}).items():
            raw = set_dotted(raw, key, value)
        try:
            return ExperimentSpec.model_validate(raw)
        except ValidationError as error:
            raise SpecError(format_validation_error(error, f"arms.{arm}")) from None

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the tuning grid, in the file's order."""
        points: list[dict[str, Any]] = [{}]
        for key, values in self.tune.grid.items():
            points = [{**point, key: value} for point in points for value in values]
        return points


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `raw` with `a.b.c` set to value (the value is kept as it is, not parsed)."""
    parts = key.split(".")
    if not all(parts):
        raise SpecError(f"tune.grid: {key!r} is not a dotted spec key")
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return deep_merge(raw, nested)


def deep_merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in, section by section (neither is modified)."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_study(study: StudySpec, source: str) -> None:
    """Every arm a valid masked-LM spec; data, pattern and step budget equal across arms."""
    specs = {arm: study.arm_spec(arm) for arm in study.arms}
    for point in study.grid_points():
        for arm in study.arms:
            study.arm_spec(arm, point)  # every grid value must give a valid spec
    for arm, spec in specs.items():
        if spec.objective.kind not in MASKED_OBJECTIVES:
            raise SpecError(f"{source}: arms.{arm}: objective {spec.objective.kind!r}; a study compares masked LMs (mlm, mntp)")
        if spec.model.kind != "gpt":
            raise SpecError(f"{source}: arms.{arm}: model {spec.model.kind!r}; a study needs a gpt model")
        if getattr(spec.tokenizer, "pattern", "none") == "none":
            raise SpecError(f"{source}: arms.{arm}: the study needs a char or bpe tokenizer with pattern gpt2 or gpt4 "
                            "(the evaluation set's words)")
    first_arm, first = next(iter(specs.items()))
    for arm, spec in specs.items():
        same = {
            "data": spec.data == first.data,
            "tokenizer.pattern": getattr(spec.tokenizer, "pattern", None) == getattr(first.tokenizer, "pattern", None),
            "train.max_steps": spec.train.max_steps == first.train.max_steps,
            "train.batch_size": spec.train.batch_size == first.train.batch_size,
            "train.grad_accum": spec.train.grad_accum == first.train.grad_accum,
            "launch.nproc": spec.launch.nproc == first.launch.nproc,
        }
        unequal = [key for key, equal in same.items() if not equal]
        if unequal:
            raise SpecError(f"{source}: budget: arms {first_arm} and {arm} differ in {', '.join(unequal)}; "
                            "every arm must see the same data and steps")
    tune_steps = max(1, round(first.train.max_steps * study.tune.steps_fraction))
    if study.tune.grid and tune_steps < 1:
        raise SpecError(f"{source}: tune.steps_fraction leaves no step to train")
    for held in study.evaluation.held_out:
        if not Path(held.path).is_file():
            raise SpecError(f"{source}: evaluation.held_out: {held.path}: file not found")


def load_study(path: str | Path) -> StudySpec:
    """Read and validate a study file; data and held-out paths are made absolute."""
    raw = read_yaml_file(path)
    try:
        study = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, str(path))) from None
    for data in [study.base.get("data")] + [arm.set.get("data") for arm in study.arms.values()]:
        for key in ("path", "val_path"):
            if isinstance(data, dict) and isinstance(data.get(key), str):
                data[key] = str(Path(data[key]).expanduser().resolve())
    for held in study.evaluation.held_out:
        held.path = str(Path(held.path).expanduser().resolve())
    check_study(study, str(path))
    return study
