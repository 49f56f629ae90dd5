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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gptexp import limits
from gptexp.safe_yaml import YamlInputError, load_yaml, one_line, short_repr
from gptexp.safe_yaml import read_yaml_file as read_yaml_document

DEFAULT_SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]


class SpecError(ValueError):
    """A spec, override or input file that cannot be used; the message is meant for the user."""


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated, and no float
    anywhere may be NaN or infinite (a NaN learning rate passes every `gt`/`lt` check)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # Assignments come from command-line flags (`--name`, `--run-id`) and derived values: a
        # bad one is bad input (SpecError, exit 2), not a pydantic traceback.
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise SpecError(format_validation_error(error, "")) from None


def check_path_text(path: str) -> None:
    """Raise ValueError for a path no file can have here: empty, control characters (a NUL makes
    every os call raise), longer than PATH_MAX or with a part longer than NAME_MAX bytes."""
    if not path:
        raise ValueError("must not be empty")
    if limits.has_control_characters(path):
        raise ValueError(f"{short_repr(path)} contains a newline, NUL or another control character")
    if len(path.encode("utf-8", errors="surrogatepass")) > limits.MAX_PATH_BYTES:
        raise ValueError(f"longer than {limits.MAX_PATH_BYTES} bytes")
    if any(len(part.encode("utf-8", errors="surrogatepass")) > limits.MAX_PATH_PART_BYTES for part in path.split("/")):
        raise ValueError(f"{short_repr(path)} has a part longer than {limits.MAX_PATH_PART_BYTES} bytes")


PositiveInt = Annotated[int, Field(gt=0)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]  # for models outside Section's config
Fraction = Annotated[FiniteFloat, Field(ge=0.0, lt=1.0)]


def upto(high: int, description: str | None = None, default: Any = ...) -> Any:
    """A positive int field bounded by `high` (a limits.MAX_* constant)."""
    return Field(default, gt=0, le=high, description=description)


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

    @field_validator("path", "val_path")
    @classmethod
    def _a_path_this_system_can_name(cls, path: str | None) -> str | None:
        if path is not None:
            check_path_text(path)
        return path

    @field_validator("separator")
    @classmethod
    def _separator_is_utf8(cls, separator: str) -> str:
        try:
            separator.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be text with a UTF-8 form (no lone surrogates)") from None
        return separator

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
    vocab_size: int = upto(limits.MAX_VOCAB_SIZE, "bytes (256) + merges + special tokens", 2048)
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
    if len(tokens) > limits.MAX_SPECIAL_TOKENS:
        raise ValueError(f"special_tokens: {len(tokens)} tokens, at most {limits.MAX_SPECIAL_TOKENS}")
    for token in tokens:
        if len(token) > limits.MAX_SPECIAL_TOKEN_LENGTH:
            raise ValueError(f"special token {short_repr(token)} is longer than {limits.MAX_SPECIAL_TOKEN_LENGTH} characters")
    if len(set(tokens)) != len(tokens):
        raise ValueError("special_tokens must be unique")
    if any(not t for t in tokens):
        raise ValueError("special_tokens must be non-empty strings")


class HFTokenizerSpec(Section):
    """A pretrained Hugging Face `tokenizers` file (tokenizer.json), used as it is (not trained)."""

    kind: Literal["hf"] = "hf"
    path: str = Field(description="a Hugging Face tokenizer.json; relative paths are from the current directory")

    @property
    def special_tokens(self) -> list[str]:
        """Unknown until the file is read: masked objectives are checked when the data is prepared."""
        return []

    @property
    def pattern(self) -> str:
        return "none"  # word starts come from the file's own pre-tokenizer, not from a gptexp pattern


ComponentArgs = dict[str, Any]


class CustomTokenizerSpec(Section):
    """A tokenizer class named by import path (see gptexp.components for the contract)."""

    kind: Literal["custom"] = "custom"
    target: str = Field(description='"package.module:ClassName", imported from installed packages or the start directory')
    args: ComponentArgs = Field(default_factory=dict, description="keyword arguments of the class")

    @property
    def special_tokens(self) -> list[str]:
        return []

    @property
    def pattern(self) -> str:
        return "none"

    @model_validator(mode="after")
    def _target_fits(self) -> CustomTokenizerSpec:
        from gptexp.components import check_custom

        check_custom("tokenizer", self.target, self.args)
        return self


TokenizerSpec = Annotated[CharTokenizerSpec | BpeTokenizerSpec | HFTokenizerSpec | CustomTokenizerSpec,
                          Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# model


class GPTSpec(Section):
    kind: Literal["gpt"] = "gpt"
    n_layer: int = upto(limits.MAX_LAYERS, "transformer blocks", 4)
    n_head: int = upto(limits.MAX_HEADS, "attention heads (n_embd must be divisible by it)", 8)
    n_embd: int = upto(limits.MAX_WIDTH, "width of the residual stream", 64)
    block_size: int = upto(limits.MAX_BLOCK_SIZE, "context length in tokens", 128)
    dropout: Fraction = Field(0.0, description="base dropout rate (a dropout_schedule may change it over training)")
    positions: Literal["learned", "rope"] = "learned"
    mlp: Literal["gelu", "swiglu"] = "gelu"
    tie_embeddings: bool = True
    bias: bool = Field(False, description="bias terms in Linear and LayerNorm layers")
    norm: Literal["layernorm", "rmsnorm"] = Field("layernorm", description="normalization of every block and the final layer (rmsnorm has no bias)")

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
    block_size: int = upto(limits.MAX_BLOCK_SIZE, "tokens per training window (the model itself looks at one)", 128)


class CustomModelSpec(Section):
    """A model class named by import path; called with vocab_size, block_size, causal and `args`."""

    kind: Literal["custom"] = "custom"
    target: str = Field(description='"package.module:ClassName", imported from installed packages or the start directory')
    block_size: int = upto(limits.MAX_BLOCK_SIZE, "context length in tokens (passed to the class)", 128)
    args: ComponentArgs = Field(default_factory=dict, description="further keyword arguments of the class")

    @model_validator(mode="after")
    def _target_fits(self) -> CustomModelSpec:
        from gptexp.components import check_custom

        check_custom("model", self.target, self.args)
        return self


ModelSpec = Annotated[GPTSpec | BigramSpec | CustomModelSpec, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# objective


class ClmSpec(Section):
    kind: Literal["clm"] = "clm"


class MaskingSpec(Section):
    mask_prob: FiniteFloat = Field(0.15, gt=0.0, lt=1.0, description="share of maskable positions (or words) chosen")
    mask_unit: Literal["token", "word", "word_tail"] = Field(
        "token", description="word: mask whole pre-split words; word_tail: keep a random prefix of a chosen word visible, mask the rest")


class MlmSpec(MaskingSpec):
    kind: Literal["mlm"] = "mlm"


class MntpSpec(MaskingSpec):
    kind: Literal["mntp"] = "mntp"


class CustomObjectiveSpec(Section):
    """An objective class named by import path; called with `args` (see gptexp.components)."""

    kind: Literal["custom"] = "custom"
    target: str = Field(description='"package.module:ClassName", imported from installed packages or the start directory')
    args: ComponentArgs = Field(default_factory=dict, description="keyword arguments of the class")

    @model_validator(mode="after")
    def _target_fits(self) -> CustomObjectiveSpec:
        from gptexp.components import check_custom

        check_custom("objective", self.target, self.args)
        return self


ObjectiveSpec = Annotated[ClmSpec | MlmSpec | MntpSpec | CustomObjectiveSpec, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------
# optimisation and training


class OptimSpec(Section):
    lr: FiniteFloat = Field(1.0e-3, gt=0.0)
    min_lr: FiniteFloat = Field(1.0e-5, ge=0.0, description="floor of the cosine schedule")
    weight_decay: FiniteFloat = Field(0.1, ge=0.0, description="applied only to parameters with 2 or more dimensions")
    betas: tuple[Fraction, Fraction] = (0.9, 0.95)
    grad_clip: FiniteFloat = Field(1.0, ge=0.0, description="max global grad norm; 0 turns clipping off")
    warmup_steps: int = Field(100, ge=0, le=limits.MAX_STEPS)
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
    batch_size: int = upto(limits.MAX_BATCH_SIZE, "sequences per micro-batch per rank", 64)
    max_steps: int = upto(limits.MAX_STEPS, "optimizer steps of the whole run", 3000)
    grad_accum: int = upto(limits.MAX_GRAD_ACCUM, "micro-batches per optimizer step", 1)
    eval_every: int = upto(limits.MAX_STEPS, "steps between evaluations", 100)
    eval_batches: int = upto(limits.MAX_EVAL_BATCHES, "batches per evaluation", 20)
    checkpoint_every: int = upto(limits.MAX_STEPS, "steps between checkpoints", 500)
    precision: Literal["fp32", "bf16", "auto"] = Field("auto", description="auto = bf16 autocast on GPU, fp32 on CPU")
    compile: bool | Literal["auto"] = Field("auto", description="torch.compile the model; auto = on CUDA, off on CPU")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = upto(limits.MAX_STEPS, "steps between train/loss log lines", 10)


class LaunchSpec(Section):
    nproc: int = upto(limits.MAX_NPROC, "processes per node (torchrun --nproc-per-node)", 1)
    nnodes: int = upto(limits.MAX_NNODES, "nodes of a multi-node run", 1)
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto = nccl on GPU, gloo on CPU")
    rdzv_endpoint: str | None = Field(None, description="host:port of the c10d rendezvous (multi-node)")
    run_id: str | None = Field(None, description="run id shared by every node of a multi-node run")

    @field_validator("rdzv_endpoint", "run_id")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and (limits.has_control_characters(value) or len(value) > 255):
            raise ValueError(f"{short_repr(value)}: expected one line of at most 255 characters")
        return value


class WandbSpec(Section):
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "gptexp"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list, description="W&B tags, 1 to 64 characters each")

    # W&B's own limits (limits.py says where they come from), checked here so that a run W&B would
    # refuse never starts: the workers would fail after the run directory exists.
    @field_validator("project", "entity", "group")
    @classmethod
    def _wandb_accepts_name(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            limits.check_wandb_name(value, info.field_name)
        return value

    @field_validator("tags")
    @classmethod
    def _wandb_accepts_tags(cls, tags: list[str]) -> list[str]:
        limits.check_wandb_tags(tags)
        return tags


class TrackingSpec(Section):
    wandb: WandbSpec = Field(default_factory=WandbSpec)


_DEFAULT_KINDS = {"tokenizer": "char", "model": "gpt", "objective": "clm", "dropout_schedule": "constant"}


class ExperimentSpec(Section):
    name: str = Field("experiment", min_length=1, max_length=limits.MAX_NAME_LENGTH,
                      description="human name (the W&B run name); run ids are generated from it")
    seed: int = Field(1337, ge=0, le=limits.MAX_SEED, description="0 to 2**63 - 1")
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
        """Let a section leave out `kind` when it means the default one (`model: {n_layer: 2}`), and
        turn a kind registered by an installed package (`model: {kind: mamba}`) into its import path."""
        if isinstance(raw, dict):
            from gptexp.components import expand_entry_point

            raw = dict(raw)
            for section, kind in _DEFAULT_KINDS.items():
                if isinstance(raw.get(section), dict) and "kind" not in raw[section]:
                    raw[section] = {"kind": kind, **raw[section]}
                if isinstance(raw.get(section), dict):
                    raw[section] = expand_entry_point(section, raw[section])
        return raw

    @field_validator("name")
    @classmethod
    def _name_is_one_line(cls, name: str) -> str:
        limits.check_wandb_name(name, "name")
        return name

    @model_validator(mode="after")
    def _objective_fits_model_and_tokenizer(self) -> ExperimentSpec:
        masked = self.objective.kind in ("mlm", "mntp")
        # hf and custom tokenizers name their special tokens in their own files: checked at preparation
        if masked and self.tokenizer.kind in ("char", "bpe") and "<mask>" not in self.tokenizer.special_tokens:
            raise ValueError(f"objective {self.objective.kind} needs '<mask>' in tokenizer.special_tokens")
        if masked and self.model.kind == "bigram":
            raise ValueError(f"objective {self.objective.kind} needs a gpt model; a bigram sees one token")
        if (masked and self.objective.mask_unit != "token" and self.tokenizer.kind in ("char", "bpe")
                and self.tokenizer.pattern == "none"):
            raise ValueError(f"mask_unit: {self.objective.mask_unit} needs a tokenizer pattern (gpt2 or gpt4) to find words")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# loading


def read_yaml_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping from `path` through safe_yaml (size, alias and duplicate-key limits),
    turning every failure into a SpecError naming the file."""
    try:
        raw = read_yaml_document(path, what="YAML file")
    except YamlInputError as error:
        raise SpecError(str(error)) from None
    if raw is None:
        raise SpecError(f"{path}: file is empty, expected a YAML mapping")
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
        shown = short_repr(override)
        if not sep or not key or any(not part for part in key.split(".")):
            raise SpecError(f"{source} {shown}: expected KEY=VALUE with a dotted key, e.g. train.max_steps=100")
        try:
            value = load_yaml(value_text, "value") if value_text.strip() else ""
        except YamlInputError as error:
            raise SpecError(f"{source} {shown}: the value is not valid YAML ({str(error).removeprefix('value: ')})") from None
        parts = key.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise SpecError(f"{source} {shown}: {one_line(where, 60)} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


MAX_PROBLEMS_SHOWN = 5


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, `source: field.path: message`, at most MAX_PROBLEMS_SHOWN of them.

    Field names and values from the input are shown escaped and shortened: a hostile key cannot
    add lines or flood the terminal.
    """
    prefix = f"{source}: " if source else ""
    lines = []
    problems = error.errors()
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        # Discriminated unions add the chosen kind to the path ("model.gpt.n_head"); drop it.
        location = [one_line(str(part), 60) for part in problem["loc"] if not _is_union_tag(part)]
        path = ".".join(location) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        elif problem["type"] == "union_tag_invalid":
            expected = problem.get("ctx", {}).get("expected_tags", "")
            message = f"unknown kind {short_repr(problem.get('ctx', {}).get('tag'))}; expected one of {expected}"
        elif problem["type"] == "union_tag_not_found":
            message = "missing 'kind'"
        message = one_line(message.removeprefix("Value error, "), 300)
        lines.append(f"{prefix}{path}: {message}")
    if len(problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"{prefix}... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
    return "\n".join(lines)


# Tags of the discriminated unions (experiment and sweep specs), dropped from error paths.
_UNION_TAGS = {"char", "bpe", "hf", "custom", "gpt", "bigram", "clm", "mlm", "mntp", "constant", "linear",
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
    """Make the data (and tokenizer file) paths absolute so a resumed run or a sweep trial finds them from anywhere."""
    spec.data.path = str(Path(spec.data.path).expanduser().resolve())
    if spec.data.val_path is not None:
        spec.data.val_path = str(Path(spec.data.val_path).expanduser().resolve())
    if isinstance(spec.tokenizer, HFTokenizerSpec):
        spec.tokenizer.path = str(Path(spec.tokenizer.path).expanduser().resolve())
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
