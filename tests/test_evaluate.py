"""Loading a trained run for eval/generate: every unusable run file is one SpecError naming it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gptexp.checkpoint import save_checkpoint
from gptexp.components import build_objective
from gptexp.evaluate import evaluate_text, generate_text, load_trained_run
from gptexp.models import build_model
from gptexp.spec import SpecError, validate_spec
from gptexp.tokenizers import train_tokenizer
from tests.conftest import TINY_SPEC

TEXT = "To be, or not to be, that is the question. " * 40


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory as training leaves it: spec, tokenizer without <unk>, best and last checkpoints."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    spec = validate_spec(TINY_SPEC, "tiny")
    (run / "spec.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    tokenizer = train_tokenizer(TEXT, kind="char", special_tokens=[])
    tokenizer.save(run / "tokenizer.json")
    model = build_model(spec.model, tokenizer.vocab_size, causal=build_objective(spec.objective).causal)
    for name in ("best.pt", "last.pt"):
        save_checkpoint({"step": 5, "model": model.state_dict()}, run / "checkpoints" / name)
    return run


def refused(call, *args) -> str:
    with pytest.raises(SpecError) as error:
        call(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_good_run_loads_and_evaluates(run_dir: Path) -> None:
    run = load_trained_run(run_dir)
    assert run.step == 5 and run.checkpoint.name == "best.pt"
    metrics = evaluate_text(run, TEXT, batch_size=4, max_batches=2)
    assert metrics["val/bpb"] > 0


def test_text_outside_a_vocabulary_without_unk(run_dir: Path) -> None:
    run = load_trained_run(run_dir)
    assert "cannot encode" in refused(evaluate_text, run, TEXT + "東京", 4, 2)
    assert "cannot encode" in refused(generate_text, run, "Zebra 東京", 5, 1.0, None, 0)


def test_a_swapped_tokenizer(run_dir: Path) -> None:
    other = train_tokenizer(TEXT + "XYZ", kind="char", special_tokens=[])
    other.save(run_dir / "tokenizer.json")
    message = refused(load_trained_run, run_dir)
    assert "best.pt" in message and "do not fit" in message and f"vocabulary {other.vocab_size}" in message


@pytest.mark.parametrize("damage", ["truncate", "foreign", "fifo"])
def test_broken_checkpoints(run_dir: Path, damage: str) -> None:
    best = run_dir / "checkpoints" / "best.pt"
    if damage == "truncate":
        best.write_bytes(best.read_bytes()[:500])
        expected = "cannot load checkpoint"
    elif damage == "foreign":
        torch.save({"state_dict": {}}, best)
        expected = "not a gptexp checkpoint"
    else:
        best.unlink()
        os.mkfifo(best)
        expected = "not a regular file"
    message = refused(load_trained_run, run_dir)
    assert str(best) in message and expected in message


def test_broken_spec_and_tokenizer_files(run_dir: Path) -> None:
    tokenizer = run_dir / "tokenizer.json"
    tokenizer.unlink()
    os.mkfifo(tokenizer)
    assert "not a regular file" in refused(load_trained_run, run_dir)
    tokenizer.unlink()
    tokenizer.write_text(json.dumps({"format": "something else"}))
    assert "tokenizer.json" in refused(load_trained_run, run_dir)
    (run_dir / "spec.yaml").write_text("- a list\n")
    assert "spec.yaml: expected a mapping" in refused(load_trained_run, run_dir)
