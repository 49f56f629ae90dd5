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
