"""The component registry: import paths, protocol and args checks at spec time, built-ins through
the same registry, provenance records."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from gptexp.components import (BUILTIN_KINDS, build_model, build_objective,
                               components_record, expand_entry_point, import_target)
from gptexp.models import GPT, Bigram, generate
from gptexp.spec import SpecError, validate_spec
from tests.e2e.test_custom_components import MODELS_PY


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package `tinylab` in a fresh start directory (GPTEXP_START_DIR), unloaded afterwards."""
    root = tmp_path / "lab"
    (root / "tinylab").mkdir(parents=True)
    (root / "tinylab" / "__init__.py").write_text("")
    (root / "tinylab" / "models.py").write_text(
        MODELS_PY.replace("class Args(BaseModel):", "class Args(BaseModel, extra='forbid'):")
        + "\nraise_on_import = False\n")
    (root / "tinylab" / "broken.py").write_text("import os\nraise RuntimeError('broken at import')\n")
    (root / "tinylab" / "needs_dep.py").write_text("import some_missing_dependency_xyz\n")
    monkeypatch.setenv("GPTEXP_START_DIR", str(root))
    yield root
    for name in [m for m in sys.modules if m == "tinylab" or m.startswith("tinylab.")]:
        del sys.modules[name]
    if str(root) in sys.path:
        sys.path.remove(str(root))


def spec_with(model: dict) -> dict:
    return {"model": {"kind": "custom", "block_size": 16, **model}}


@pytest.mark.parametrize("model, message", [
    ({"target": "tinylab.models:Missing"}, "module tinylab.models has no attribute 'Missing'"),
    ({"target": "nolab.models:TinyMean"}, "no module 'nolab' among the installed packages or in"),
    ({"target": "tinylab.needs_dep:X"}, "importing tinylab.needs_dep failed: No module named 'some_missing_dependency_xyz'"),
    ({"target": "tinylab.broken:X"}, "importing tinylab.broken failed: RuntimeError: broken at import"),
    ({"target": "tinylab.models"}, 'expected "package.module:Name"'),
    ({"target": "tinylab.models:NotAModel"}, "is not a model: it has no forward, parameters"),
    ({"target": "tinylab.models:TinyMean", "args": {"d_hidden": "wide"}}, "args.d_hidden: Input should be a valid integer"),
    ({"target": "tinylab.models:TinyMean", "args": {"d_hidden": 0}}, "args.d_hidden: Input should be greater than 0"),
    ({"target": "tinylab.models:TinyMean", "args": {"d_state": 4}}, "args.d_state: Extra inputs are not permitted"),
    ({"target": "tinylab.models:Plain", "args": {"depth": 2}}, "got an unexpected keyword argument 'depth'"),
    ({"target": "tinylab.models:Plain", "args": {"vocab_size": 4}}, "vocab_size is set by gptexp"),
])
def test_bad_targets_and_args_are_spec_errors_naming_the_field(lab: Path, model: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        validate_spec(spec_with(model), "x.yaml")
    text = str(error.value)
    assert text.startswith("x.yaml: model: ") and message in text, text
    assert "\n" not in text


def test_custom_model_is_built_with_the_keyword_contract(lab: Path) -> None:
    spec = validate_spec(spec_with({"target": "tinylab.models:TinyMean", "args": {"d_hidden": 12}}), "x")
    model = build_model(spec.model, vocab_size=40, causal=True)
    assert type(model).__name__ == "TinyMean" and model.embed.weight.shape == (40, 12)
    plain = validate_spec(spec_with({"target": "tinylab.models:Plain", "args": {"width": 3}}), "x")
    assert build_model(plain.model, vocab_size=7, causal=False).table.weight.shape == (7, 7)
    # no generate(): gptexp samples with forward calls, greedy is deterministic
    idx = torch.tensor([[1, 2, 3]])
    out = generate(model.eval(), idx, 5, block_size=16, temperature=0.0)
    assert out.shape == (1, 8) and torch.equal(out[:, :3], idx)
    assert torch.equal(out, generate(model, idx, 5, block_size=16, temperature=0.0))


def test_builtin_kinds_go_through_the_same_registry() -> None:
    spec = validate_spec({"model": {"n_layer": 1, "n_embd": 16, "n_head": 2, "block_size": 8}}, "x")
    assert isinstance(build_model(spec.model, 30, causal=True), GPT)
    bigram = validate_spec({"model": {"kind": "bigram"}}, "x")
    assert isinstance(build_model(bigram.model, 30, causal=True), Bigram)
    assert build_objective(spec.objective).causal is True
    mlm = validate_spec({"objective": {"kind": "mlm"}}, "x")
    assert build_objective(mlm.objective).causal is False
    assert {section: sorted(kinds) for section, kinds in BUILTIN_KINDS.items()} == {
        "model": ["bigram", "gpt"], "objective": ["clm", "mlm", "mntp"], "tokenizer": ["bpe", "char", "hf"]}
    for kinds in BUILTIN_KINDS.values():
        for target in kinds.values():
            assert callable(import_target(target))


def test_custom_objective_must_say_whether_it_is_causal(lab: Path) -> None:
    (lab / "tinylab" / "objectives.py").write_text(
        "class NoCausal:\n    def make_batch(self, window, info, generator):\n        return None\n")
    with pytest.raises(SpecError, match="objective: objective tinylab.objectives:NoCausal: needs a boolean `causal`"):
        validate_spec({"objective": {"kind": "custom", "target": "tinylab.objectives:NoCausal"}}, "x")
    good = validate_spec({"objective": {"kind": "custom", "target": "tinylab.models:ShiftedClm", "args": {"skip": 2}}}, "x")
    assert build_objective(good.objective).skip == 2


def test_unknown_kinds_stay_unknown_and_builtins_are_not_expanded() -> None:
    assert expand_entry_point("model", {"kind": "gpt"}) == {"kind": "gpt"}
    assert expand_entry_point("model", {"kind": "nosuchkind-xyz"}) == {"kind": "nosuchkind-xyz"}
    with pytest.raises(SpecError, match="model: unknown kind 'nosuchkind-xyz'"):
        validate_spec({"model": {"kind": "nosuchkind-xyz"}}, "x")


def test_the_run_records_import_path_and_file_hash(lab: Path) -> None:
    spec = validate_spec(spec_with({"target": "tinylab.models:TinyMean"}), "x")
    record = components_record(spec)
    model_file = lab / "tinylab" / "models.py"
    assert record == {"model": {"target": "tinylab.models:TinyMean", "module": "tinylab.models",
                                "file": str(model_file.resolve()), "sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
                                "version": None, "start_dir": str(lab.resolve())}}


CUSTOM_TOKENIZER = '''
import numpy as np

from gptexp.tokenizers.base import EncodedText


class Bytes:
    """Every UTF-8 byte is a token; one special token after them."""

    def __init__(self, specials=("<eos>",)):
        self.specials = list(specials)
        self.trained_on = 0

    def train(self, text):
        self.trained_on = len(text)

    @property
    def vocab_size(self):
        return 256 + len(self.specials)

    @property
    def special_tokens(self):
        return {t: 256 + i for i, t in enumerate(self.specials)}

    def encode(self, text, allow_special=False):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def encode_for_training(self, text):
        ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)
        return EncodedText(ids, np.ones(len(ids), dtype=np.uint8), np.zeros(len(ids), dtype=bool))

    def to_dict(self):
        return {"specials": self.specials, "trained_on": self.trained_on}

    @classmethod
    def from_dict(cls, d):
        tok = cls(d["specials"])
        tok.trained_on = d["trained_on"]
        return tok
'''


def test_a_custom_tokenizer_is_trained_saved_and_loaded_by_import_path(lab: Path, tmp_path: Path) -> None:
    from gptexp.data import prepare_data
    from gptexp.tokenizers import load_tokenizer

    (lab / "tinylab" / "tok.py").write_text(CUSTOM_TOKENIZER)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("héllo wörld " * 500, encoding="utf-8")
    spec = validate_spec({"data": {"path": str(corpus), "val_fraction": 0.2},
                          "tokenizer": {"kind": "custom", "target": "tinylab.tok:Bytes", "args": {"specials": ["<eos>", "<pad>"]}}}, "x")
    prepared = prepare_data(spec, tmp_path / "cache")
    saved = json.loads(prepared.tokenizer_path.read_text())
    assert saved["kind"] == "custom" and saved["target"] == "tinylab.tok:Bytes"
    tok = load_tokenizer(prepared.tokenizer_path)
    assert type(tok).__name__ == "Bytes" and tok.trained_on == 4800 and tok.vocab_size == 258
    with pytest.raises(SpecError, match="tokenizer: args {'size': 3} do not fit"):
        validate_spec({"tokenizer": {"kind": "custom", "target": "tinylab.tok:Bytes", "args": {"size": 3}}}, "x")
