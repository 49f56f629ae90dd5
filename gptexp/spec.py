"""The experiment spec: Pydantic models for every section, YAML loading and `--set` overrides.

A spec is data. It is validated once, here, and every other module receives typed objects; a bad
spec never reaches torchrun. Errors are `SpecError`s whose message names the file, the field path
and what was expected, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

DEFAULT_SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]


class SpecError(ValueError):
    """A spec, override or input file that cannot be used; the message is meant for the user."""


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


# ---------------------------------------------------------------------------------------------
# data and tokenizer


class DataSpec(Section):
    path: str = Field("data/tinyshakespeare.txt", description="the corpus: a UTF-8 text file, a directory or a glob of "
                      "files (each file one document); relative paths are from the current directory")
    format: Literal["text", "jsonl", "parquet"] = Field("text", description="text files, JSON Lines or Parquet "
                                                         "(one document per record, its text in `field`)")
    field: str = Field("text", min_length=1, description="jsonl/parquet: the record field that holds the text")
    separator: str = Field("\n\n", description="text put between documents (files, records) when they are joined")
    val_path: str | None = Field(None, description="a separate validation corpus (same format); replaces val_fraction")
    val_fraction: Fraction = Field(0.1, description="share of the corpus (its end) held out for validation")
    test_fraction: Fraction = Field(0.0, description="share held out for testing, taken before the validation split")
    workers: int | None = Field(None, ge=1, le=1024, description="processes that prepare the data (default: all cores)")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DataSpec:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be below 1 (some text must be left to train on)")
        return self


SplitPattern = Literal["gpt2", "gpt4", "none"]


class CharTokenizerSpec(Section):
    kind: Literal["char"] = "char"
    pattern: SplitPattern = Field("gpt4", description="regex used only to find word boundaries (mask_unit: word)")
    special_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_SPECIAL_TOKENS))

    @model_validator(mode="after")
    def _unique_specials(self) -> CharTokenizerSpec:
        _check_special_tokens(self.special_tokens)
        return self


class BpeTokenizerSpec(Section):
    kind: Literal["bpe"] = "bpe"
    vocab_size: PositiveInt = Field(2048, description="bytes (256) + merges + special tokens")
    pattern: SplitPattern = Field("gpt4", description="pre-split regex: gpt2 | gpt4 | none (byte pairs over the whole text)")
    special_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_SPECIAL_TOKENS))
    train_bytes: PositiveInt | None = Field(None, description="train on a sample of about this many bytes of the "
                                            "training split, spread over it (default: all of it)")

    @model_validator(mode="after")
    def _room_for_bytes_and_specials(self) -> BpeTokenizerSpec:
        _check_special_tokens(self.special_tokens)
        minimum = 256 + len(self.special_tokens)
        if self.vocab_size < minimum:
            raise ValueError(f"vocab_size must be at least 256 bytes + {len(self.special_tokens)} special tokens = {minimum}")
        return self


def _check_special_tokens(tokens: list[str]) -> None:
    if len(set(tokens)) != len(tokens):
        raise ValueError("special_tokens must be unique")
    if any(not t for t in tokens):
        raise ValueError("special_tokens must be non-empty strings")


TokenizerSpec = Annotated[CharTokenizerSpec | BpeTokenizerSpec, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# model


class GPTSpec(Section):
    kind: Literal["gpt"] = "gpt"
    n_layer: PositiveInt = 4
    n_head: PositiveInt = 8
    n_embd: PositiveInt = 64
    block_size: PositiveInt = Field(128, description="context length in tokens")
    dropout: Fraction = Field(0.0, description="base dropout rate (a dropout_schedule may change it over training)")
    positions: Literal["learned", "rope"] = "learned"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    tie_embeddings: bool = True
    bias: bool = Field(False, description="bias terms in Linear and LayerNorm layers")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTSpec:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.positions == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size; n_embd / n_head = {self.n_embd // self.n_head}")
        return self

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


class BigramSpec(Section):
    kind: Literal["bigram"] = "bigram"
    block_size: PositiveInt = Field(128, description="tokens per training window (the model itself looks at one)")


ModelSpec = Annotated[GPTSpec | BigramSpec, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# objective


class ClmSpec(Section):
    kind: Literal["clm"] = "clm"


class MaskingSpec(Section):
    mask_prob: float = Field(0.15, gt=0.0, lt=1.0, description="share of maskable positions (or words) chosen")
    mask_unit: Literal["token", "word"] = Field("token", description="word: mask whole pre-split words")


class MlmSpec(MaskingSpec):
    kind: Literal["mlm"] = "mlm"


class MntpSpec(MaskingSpec):
    kind: Literal["mntp"] = "mntp"


ObjectiveSpec = Annotated[ClmSpec | MlmSpec | MntpSpec, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# optimisation and training


class OptimSpec(Section):
    lr: float = Field(1.0e-3, gt=0.0)
    min_lr: float = Field(1.0e-5, ge=0.0, description="floor of the cosine schedule")
    weight_decay: float = Field(0.1, ge=0.0, description="applied only to parameters with 2 or more dimensions")
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0.0, description="max global grad norm; 0 turns clipping off")
    warmup_steps: int = Field(100, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"

    @model_validator(mode="after")
    def _min_below_peak(self) -> OptimSpec:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class ConstantDropoutSpec(Section):
    kind: Literal["constant"] = "constant"


class LinearDropoutSpec(Section):
    kind: Literal["linear"] = "linear"
    start: Fraction = 0.1
    end: Fraction = 0.0


DropoutScheduleSpec = Annotated[ConstantDropoutSpec | LinearDropoutSpec, Field(discriminator="kind")]


class TrainSpec(Section):
    batch_size: PositiveInt = Field(64, description="sequences per micro-batch per rank")
    max_steps: PositiveInt = 3000
    grad_accum: PositiveInt = Field(1, description="micro-batches per optimizer step")
    eval_every: PositiveInt = 100
    eval_batches: PositiveInt = 20
    checkpoint_every: PositiveInt = 500
    precision: Literal["fp32", "bf16", "auto"] = Field("auto", description="auto = bf16 autocast on GPU, fp32 on CPU")
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: PositiveInt = Field(10, description="steps between train/loss log lines")


class LaunchSpec(Section):
    nproc: PositiveInt = Field(1, description="processes per node (torchrun --nproc-per-node)")
    nnodes: PositiveInt = 1
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto = nccl on GPU, gloo on CPU")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous (multi-node)")
    run_id: str | None = Field(None, description="run id shared by every node of a multi-node run")


class WandbSpec(Section):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "gptexp"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)


class TrackingSpec(Section):
    wandb: WandbSpec = Field(default_factory=WandbSpec)


_DEFAULT_KINDS = {"tokenizer": "char", "model": "gpt", "objective": "clm", "dropout_schedule": "constant"}


class ExperimentSpec(Section):
    name: str = Field("experiment", min_length=1, description="human name; run ids are generated from it")
    seed: int = 1337
    data: DataSpec = Field(default_factory=DataSpec)
    tokenizer: TokenizerSpec = Field(default_factory=CharTokenizerSpec)
    model: ModelSpec = Field(default_factory=GPTSpec)
    objective: ObjectiveSpec = Field(default_factory=ClmSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    dropout_schedule: DropoutScheduleSpec = Field(default_factory=ConstantDropoutSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    launch: LaunchSpec = Field(default_factory=LaunchSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, raw: Any) -> Any:
        """Let a section leave out `kind` when it means the default one (`model: {n_layer: 2}`)."""
        if isinstance(raw, dict):
            raw = dict(raw)
            for section, kind in _DEFAULT_KINDS.items():
                if isinstance(raw.get(section), dict) and "kind" not in raw[section]:
                    raw[section] = {"kind": kind, **raw[section]}
        return raw

    @model_validator(mode="after")
    def _objective_fits_model_and_tokenizer(self) -> ExperimentSpec:
        masked = self.objective.kind in ("mlm", "mntp")
        if masked and "<mask>" not in self.tokenizer.special_tokens:
            raise ValueError(f"objective {self.objective.kind} needs '<mask>' in tokenizer.special_tokens")
        if masked and self.model.kind == "bigram":
            raise ValueError(f"objective {self.objective.kind} needs a gpt model; a bigram sees one token")
        if masked and self.objective.mask_unit == "word" and self.tokenizer.pattern == "none":
            raise ValueError("mask_unit: word needs a tokenizer pattern (gpt2 or gpt4) to find words")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# loading


def read_yaml_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from `path` with `yaml.safe_load`, turning every failure into a SpecError."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: file not found")
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, expected a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read ({error.strerror})") from None
    if not text.strip():
        raise SpecError(f"{path}: file is empty, expected a YAML mapping")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError(f"{path}: broken YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Return a copy of `raw` with each `a.b.c=value` applied; values are parsed as YAML.

    `apply_overrides({"train": {"max_steps": 10}}, ["train.max_steps=20"]) -> {"train": {"max_steps": 20}}`
    """
    import copy

    result = copy.deepcopy(raw)
    for override in overrides:
        key, sep, value_text = override.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"{source} {override!r}: expected KEY=VALUE with a dotted key, e.g. train.max_steps=100")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            raise SpecError(f"{source} {override!r}: the value is not valid YAML") from None
        parts = key.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise SpecError(f"{source} {override!r}: {where} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `source: field.path: message`."""
    lines = []
    for problem in error.errors():
        # Discriminated unions add the chosen kind to the path ("model.gpt.n_head"); drop it.
        location = [str(part) for part in problem["loc"] if not _is_union_tag(part)]
        path = ".".join(location) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        elif problem["type"] == "union_tag_invalid":
            expected = problem.get("ctx", {}).get("expected_tags", "")
            message = f"unknown kind {problem.get('ctx', {}).get('tag')!r}; expected one of {expected}"
        elif problem["type"] == "union_tag_not_found":
            message = "missing 'kind'"
        message = message.removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)


# Tags of the discriminated unions (experiment and sweep specs), dropped from error paths.
_UNION_TAGS = {"char", "bpe", "gpt", "bigram", "clm", "mlm", "mntp", "constant", "linear",
               "float", "int", "categorical", "median", "hyperband", "none"}


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in _UNION_TAGS


def validate_spec(raw: dict[str, Any], source: str) -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, source)) from None


def load_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ExperimentSpec:
    """Load, override and validate an experiment spec; the data path is made absolute."""
    raw = apply_overrides(read_yaml_file(path), overrides or [])
    spec = validate_spec(raw, str(path))
    return resolve_paths(spec)


def resolve_paths(spec: ExperimentSpec) -> ExperimentSpec:
    """Make the data path absolute so a resumed run (or a sweep trial) finds it from anywhere."""
    spec.data.path = str(Path(spec.data.path).expanduser().resolve())
    if spec.data.val_path is not None:
        spec.data.val_path = str(Path(spec.data.val_path).expanduser().resolve())
    return spec


def check_data_file(spec: ExperimentSpec) -> None:
    """The corpus must be readable, regular, non-empty UTF-8 files; raise a SpecError naming the problem.

    The checks live with the corpus readers (gptexp.data.corpus); this keeps the old entry point.
    """
    from gptexp.data.corpus import CorpusError, check_corpus

    try:
        check_corpus(spec.data)
    except CorpusError as error:
        raise SpecError(str(error)) from None


def dump_spec(spec: ExperimentSpec, path: str | os.PathLike[str]) -> None:
    Path(path).write_text(spec.to_yaml(), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# sweeps (gptexp sweep): an Optuna study whose trials are runs of one base experiment

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
    seed: int | None = Field(None, description="sampler seed: a new study run by one process with workers: 1 is reproducible; a process that resumes or joins a study reseeds at random")


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
SweepMetric = Literal["val/bpb", "val/loss", "val/acc"]

class SweepSpec(Section):
    """A sweep file: which experiment, what to vary, how to search, how much to spend."""

    experiment: str = Field(description="the base experiment spec; a relative path is from the current directory, like data.path")
    overrides: list[str] | dict[str, Any] = Field(default_factory=list, description="changes to the base spec for every trial: [k=v, ...] or {dotted.key: value}")
    space: dict[str, SpaceParam] = Field(min_length=1, description="dotted spec path -> {type: float|int|categorical, low, high, log, step, choices}; type is inferred when left out")
    metric: SweepMetric = Field("val/bpb", description="the run's final value of this metric (summary.json) is the trial's value; reported at every eval for pruning")
    direction: Literal["minimize", "maximize"] = "minimize"
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=MedianPrunerSpec)
    n_trials: PositiveInt = Field(20, description="trials in the study in total (a retried trial counts once); a grid is capped at its size")
    timeout: float | None = Field(None, gt=0, description="seconds after which this process starts no new trial")
    workers: PositiveInt = Field(1, description="trials run at once by this process")
    study: str | None = Field(None, min_length=1, description="Optuna study name (default: the sweep file's name)")
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


def load_sweep_spec(path: str | os.PathLike[str], overrides: list[str] | None = None) -> SweepSpec:
    """Load and validate a sweep file, its base experiment and every path of its space.

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
    if sweep.study is None:
        sweep.study = path.stem
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
