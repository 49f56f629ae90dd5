"""The study file: arms become experiment specs; bad arms and unequal budgets are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gptexp.spec import SpecError
from gptexp.study.spec import load_study
from tests.conftest import CORPUS

STUDY = {
    "name": "tiny_study",
    "seeds": [1, 2],
    "base": {"data": {"path": str(CORPUS), "val_fraction": 0.1}, "objective": {"kind": "mlm"},
             "model": {"n_layer": 1, "n_head": 2, "n_embd": 16}, "train": {"max_steps": 10, "batch_size": 4}},
    "arms": {
        "char": {"seeds": 2, "set": {"tokenizer": {"kind": "char"}, "model": {"block_size": 64}, "objective": {"mask_unit": "word"}}},
        "bpe": {"seeds": 1, "set": {"tokenizer": {"kind": "bpe", "vocab_size": 300}, "model": {"block_size": 24},
                                    "objective": {"mask_unit": "word_tail"}}},
    },
    "tune": {"grid": {"optim.lr": [1.0e-3, 3.0e-3]}},
}


def write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def changed(**edits) -> dict:
    study = yaml.safe_load(yaml.safe_dump(STUDY))
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        node = study
        for part in parents:
            node = node[part]
        node[leaf] = value
    return study


def test_arms_are_the_base_with_their_changes(tmp_path):
    study = load_study(write(tmp_path, STUDY))
    char, bpe = study.arm_spec("char"), study.arm_spec("bpe", {"optim.lr": 3.0e-3})
    assert char.tokenizer.kind == "char" and char.model.block_size == 64 and char.model.n_embd == 16
    assert bpe.objective.mask_unit == "word_tail" and bpe.optim.lr == 3.0e-3 and bpe.train.max_steps == 10
    assert study.grid_points() == [{"optim.lr": 1.0e-3}, {"optim.lr": 3.0e-3}]
    assert Path(char.data.path).is_absolute()


@pytest.mark.parametrize("edits, message", [
    ({"arms__bpe__set__objective": {"kind": "clm"}}, "compares masked LMs"),
    ({"arms__bpe__set__train": {"max_steps": 20}}, "differ in train.max_steps"),
    ({"arms__bpe__set__train": {"batch_size": 8}}, "differ in train.batch_size"),
    ({"arms__bpe__set__data": {"val_fraction": 0.2}}, "differ in data"),
    ({"arms__bpe__set__tokenizer": {"kind": "bpe", "pattern": "gpt2", "vocab_size": 300}}, "tokenizer.pattern"),
    ({"arms__bpe__set__model": {"n_layer": 0}}, "arms.bpe: model.n_layer"),
    ({"arms__bpe__seeds": 3}, "the study lists 2 seeds"),
    ({"arms__bpe__set__colour": "red"}, "arms.bpe: colour: unknown field"),
    ({"tune__grid": {"optim.lr": [-1.0]}}, "optim.lr"),
    ({"tune__grid": {"optim.lr": []}}, "at least one value"),
    ({"tune__steps_fraction": 0.0}, "steps_fraction"),
    ({"name": "../escape"}, "name"),
    ({"arms": {"only": STUDY["arms"]["char"]}}, "arms"),
])
def test_bad_studies_are_refused(tmp_path, edits, message):
    with pytest.raises(SpecError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_study(write(tmp_path, changed(**edits)))
