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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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
    mask_unit: Literal["token", "word", "word_tail"] = Field(
        "token", description="word: mask whole pre-split words; word_tail: keep a random prefix of a chosen word visible, mask the rest")


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
        if masked and self.objective.mask_unit != "token" and self.tokenizer.pattern == "none":
            raise ValueError(f"mask_unit: {self.objective.mask_unit} needs a tokenizer pattern (gpt2 or gpt4) to find words")
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
