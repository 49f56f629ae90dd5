from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gptexp.spec import (
    BpeTokenizerSpec,
    ExperimentSpec,
    GPTSpec,
    SpecError,
    apply_overrides,
    dump_spec,
    load_spec,
    validate_spec,
)
from tests.conftest import REPO_ROOT


def test_defaults_fill_every_section_and_kinds_may_be_left_out() -> None:
    spec = validate_spec({"model": {"n_layer": 2}, "objective": {"mask_prob": 0.2, "kind": "mlm"}}, "x.yaml")
    assert spec.model.kind == "gpt" and spec.model.n_layer == 2 and spec.model.n_head == 8
    assert spec.tokenizer.kind == "char"
    assert spec.objective.kind == "mlm" and spec.objective.mask_prob == 0.2
    assert spec.tracking.wandb.mode == "offline"


def test_load_dump_load_is_identity(tmp_path: Path) -> None:
    spec = load_spec(REPO_ROOT / "experiments" / "clm_char.yaml", ["tokenizer.kind=bpe", "objective.kind=mlm"])
    path = tmp_path / "resolved.yaml"
    dump_spec(spec, path)
    again = load_spec(path)
    assert again == spec
    assert again.model_dump() == spec.model_dump()


def test_overrides_are_parsed_as_yaml_values() -> None:
    raw = {"train": {"max_steps": 10}, "optim": {"betas": [0.9, 0.95]}}
    out = apply_overrides(raw, ["train.max_steps=20", "optim.betas=[0.8, 0.9]", "tracking.wandb.tags=[a, b]",
                                "name=123", "train.compile=true"])
    assert out["train"]["max_steps"] == 20
    assert out["optim"]["betas"] == [0.8, 0.9]
    assert out["tracking"] == {"wandb": {"tags": ["a", "b"]}}
    assert out["name"] == 123 and out["train"]["compile"] is True
    assert raw["train"]["max_steps"] == 10  # the input is not mutated


@pytest.mark.parametrize("override, message", [
    ("train.max_steps", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("a..b=1", "expected KEY=VALUE"),
    ("train.max_steps.deeper=1", "train.max_steps is a value"),
    ("train.max_steps=[", "not valid YAML"),
])
def test_malformed_overrides_are_spec_errors(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        apply_overrides({"train": {"max_steps": 1}}, [override])


@pytest.mark.parametrize("raw, message", [
    ({"model": {"n_embd": 65, "n_head": 8}}, "model: n_embd (65) must be divisible by n_head (8)"),
    ({"model": {"positions": "rope", "n_embd": 24, "n_head": 8}}, "rope needs an even head size"),
    ({"tokenizer": {"kind": "bpe", "vocab_size": 260}}, "tokenizer: vocab_size must be at least 256 bytes + 5 special tokens = 261"),
    ({"objective": {"kind": "mlm", "mask_prob": 0.0}}, "objective.mask_prob: Input should be greater than 0"),
    ({"objective": {"kind": "mlm", "mask_prob": 1.0}}, "objective.mask_prob: Input should be less than 1"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "data: val_fraction + test_fraction must be below 1"),
    ({"train": {"batch_size": 0}}, "train.batch_size: Input should be greater than 0"),
    ({"optim": {"lr": 1e-4, "min_lr": 1e-3}}, "optim: min_lr (0.001) must not exceed lr (0.0001)"),
    ({"model": {"kind": "bigram"}, "objective": {"kind": "mlm"}}, "needs a gpt model"),
    ({"tokenizer": {"special_tokens": ["<pad>"]}, "objective": {"kind": "mntp"}}, "needs '<mask>' in tokenizer.special_tokens"),
    ({"tokenizer": {"kind": "bpe", "pattern": "none"}, "objective": {"kind": "mlm", "mask_unit": "word"}}, "mask_unit: word needs a tokenizer pattern"),
    ({"tokenizer": {"special_tokens": ["<a>", "<a>"]}}, "special_tokens must be unique"),
    ({"launch": {"nproc": 0}}, "launch.nproc: Input should be greater than 0"),
    ({"tracking": {"wandb": {"mode": "sometimes"}}}, "tracking.wandb.mode: Input should be 'offline', 'online' or 'disabled'"),
    ({"model": {"kind": "rnn"}}, "model: unknown kind 'rnn'"),
    ({"surprise": 1}, "surprise: unknown field"),
])
def test_cross_field_and_range_checks_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        validate_spec(raw, "spec.yaml")
    assert str(error.value).startswith("spec.yaml: ")
    assert message in str(error.value)


def test_every_kind_design_lists_is_accepted() -> None:
    for tokenizer in ({"kind": "char"}, {"kind": "bpe", "pattern": "gpt2"}, {"kind": "bpe", "pattern": "none"}):
        for model in ({"kind": "gpt", "positions": "rope", "mlp": "swiglu"}, {"kind": "bigram"}):
            for objective in ({"kind": "clm"}, {"kind": "mlm"}, {"kind": "mntp"}):
                if model["kind"] == "bigram" and objective["kind"] != "clm":
                    continue
                for dropout in ({"kind": "constant"}, {"kind": "linear", "start": 0.2, "end": 0.0}):
                    validate_spec({"tokenizer": tokenizer, "model": model, "objective": objective,
                                   "dropout_schedule": dropout}, "x")


def test_head_size_is_derived() -> None:
    assert GPTSpec(n_embd=96, n_head=6).head_size == 16
    assert BpeTokenizerSpec(vocab_size=261).vocab_size == 261


def test_data_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "corpus.txt"}}))
    assert load_spec(path).data.path == str(tmp_path / "corpus.txt")


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_validates_and_names_its_command(path: Path) -> None:
    spec = load_spec(path)
    assert isinstance(spec, ExperimentSpec)
    first_line = path.read_text().splitlines()[0]
    assert first_line == f"# gptexp run experiments/{path.name}"


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpecError, match="broken YAML"):
        load_spec(path)


# ---------------------------------------------------------------------------------------------
# bounds: every value is checked before anything runs (issue 10, point 6)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"n_layer": 10**9}}, "model.n_layer: Input should be less than or equal to 1024"),
    ({"model": {"n_layer": 1.0e9}}, "model.n_layer: Input should be less than or equal to 1024"),
    ({"model": {"n_head": 2048, "n_embd": 4096}}, "model.n_head: Input should be less than or equal to 1024"),
    ({"model": {"n_embd": 2**20}}, "model.n_embd: Input should be less than or equal to 65536"),
    ({"model": {"block_size": 2**30}}, "model.block_size: Input should be less than or equal to 1048576"),
    ({"model": {"kind": "bigram", "block_size": 2**30}}, "model.block_size: Input should be less than or equal to 1048576"),
    ({"tokenizer": {"kind": "bpe", "vocab_size": 2**40}}, "tokenizer.vocab_size: Input should be less than or equal to 1048576"),
    ({"train": {"batch_size": 10**6}}, "train.batch_size: Input should be less than or equal to 65536"),
    ({"train": {"max_steps": 10**12}}, "train.max_steps: Input should be less than or equal to 1000000000"),
    ({"train": {"grad_accum": 10**6}}, "train.grad_accum: Input should be less than or equal to 65536"),
    ({"train": {"eval_batches": 10**9}}, "train.eval_batches: Input should be less than or equal to 1000000"),
    ({"train": {"eval_every": 10**10}}, "train.eval_every: Input should be less than or equal to 1000000000"),
    ({"optim": {"warmup_steps": 10**10}}, "optim.warmup_steps: Input should be less than or equal to 1000000000"),
    ({"launch": {"nproc": 10**5}}, "launch.nproc: Input should be less than or equal to 1024"),
    ({"seed": 2**64}, "seed: Input should be less than or equal to 9223372036854775807"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"name": "n" * 129}, "name: String should have at most 128 characters"),
    ({"name": "two\nlines"}, "name: name 'two\\nlines' contains a newline or another control character"),
    ({"tokenizer": {"special_tokens": ["<x>" * 100]}}, "tokenizer: special token '<x><x>"),
    ({"tracking": {"wandb": {"tags": ["fine", "t" * 65]}}}, "tracking.wandb.tags: tag 1 ('tttt"),
    ({"tracking": {"wandb": {"project": "p" * 129}}}, "tracking.wandb.project: project 'ppp"),
    ({"tracking": {"wandb": {"project": "team/project"}}}, "tracking.wandb.project: project 'team/project' contains /; W&B forbids"),
    ({"tracking": {"wandb": {"group": "g" * 129}}}, "tracking.wandb.group: group 'ggg"),
    ({"launch": {"rdzv_endpoint": "host:29500\n"}}, "launch.rdzv_endpoint: 'host:29500\\n': expected one line"),
    ({"data": {"path": "corpus\x00.txt"}}, "data.path: 'corpus\\x00.txt' contains a newline, NUL"),  # was a ValueError traceback
    ({"data": {"path": "d/" + "x" * 256}}, "data.path: 'd/xxx"),
    ({"data": {"val_path": "val\n.txt"}}, "data.val_path: 'val\\n.txt' contains a newline"),
])
def test_upper_bounds_and_w_and_b_limits_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        validate_spec(raw, "spec.yaml")
    assert f"spec.yaml: {message}" in str(error.value)


@pytest.mark.parametrize("field", [
    "optim.lr", "optim.min_lr", "optim.weight_decay", "optim.grad_clip", "model.dropout", "data.val_fraction",
    "data.test_fraction", "objective.mask_prob", "dropout_schedule.start",
])
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_floats_must_be_finite_everywhere(field: str, value: str) -> None:
    raw = {"objective": {"kind": "mlm"}, "dropout_schedule": {"kind": "linear"}}
    with pytest.raises(SpecError, match=f"{field}: Input should be a finite number"):
        validate_spec(apply_overrides(raw, [f"{field}={value}"]), "spec.yaml")
    with pytest.raises(SpecError, match="optim.betas.1: Input should be a finite number"):
        validate_spec(apply_overrides({}, [f"optim.betas=[0.9, {value}]"]), "spec.yaml")


def test_the_largest_allowed_values_validate() -> None:
    spec = validate_spec({"seed": 2**63 - 1, "name": "n" * 128, "tracking": {"wandb": {"tags": ["t" * 64]}},
                          "model": {"n_layer": 1024, "n_head": 1024, "n_embd": 65536, "block_size": 2**20}}, "x")
    assert spec.seed == 2**63 - 1 and spec.model.n_layer == 1024


def test_an_invalid_assignment_is_a_spec_error_not_a_pydantic_traceback() -> None:
    spec = validate_spec({}, "x")
    with pytest.raises(SpecError, match="name: String should have at most 128 characters"):
        spec.name = "n" * 200  # what `gptexp run --name` does
    with pytest.raises(SpecError, match="run_id: .*expected one line"):
        spec.launch.run_id = "run\n"
    assert spec.name == "experiment" and spec.launch.run_id is None


def test_a_validation_error_is_short_and_one_line_per_problem() -> None:
    raw = {f"bad{i}": i for i in range(40)} | {"evil\nkey": 1}
    with pytest.raises(SpecError) as error:
        validate_spec(raw, "spec.yaml")
    lines = str(error.value).splitlines()
    assert len(lines) == 6 and lines[-1] == "spec.yaml: ... and 36 more problems"
    with pytest.raises(SpecError) as error:
        validate_spec({"evil\nkey" + "k" * 500: 1}, "spec.yaml")
    assert "\n" not in str(error.value) and len(str(error.value)) < 200 and "evil\\nkey" in str(error.value)


# ---------------------------------------------------------------------------------------------
# YAML read safely everywhere: spec files, --set values


def test_a_spec_file_with_a_duplicate_key_is_refused_naming_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("model:\n  n_layer: 2\ntrain:\n  max_steps: 5\n  max_steps: 50\n")
    with pytest.raises(SpecError, match=r"spec.yaml: duplicate key 'max_steps' on line 5 \(first on line 4\)"):
        load_spec(path)


def test_an_alias_bomb_in_a_spec_or_an_override_is_refused(tmp_path: Path) -> None:
    from tests.test_safe_yaml import alias_bomb

    path = tmp_path / "spec.yaml"
    path.write_text(alias_bomb() + "name: x\n")
    with pytest.raises(SpecError, match="spec.yaml: more than 100000 nodes once aliases are expanded"):
        load_spec(path)
    flow_bomb = "{a: &a [x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)) + "}"
    with pytest.raises(SpecError, match=r"--set 'tracking.wandb.tags=.*: the value is not valid YAML \(more than 100000 nodes"):
        apply_overrides({}, [f"tracking.wandb.tags={flow_bomb}"])


def test_override_values_have_duplicate_keys_refused_too() -> None:
    with pytest.raises(SpecError, match="duplicate key 'n_layer'"):
        apply_overrides({}, ["model={n_layer: 2, n_layer: 3}"])


def test_a_spec_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SpecError, match="not a regular file"):
        load_spec(fifo)
