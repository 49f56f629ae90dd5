"""`gptexp export --format hf`: transformers loads the directory offline with no custom code, and
the model and tokenizer compute exactly what gptexp's do; models without an exact counterpart are
refused with exit 2 and the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from gptexp.checkpoint import save_checkpoint
from gptexp.export import ExportError, export_hf, export_safetensors, hf_architecture
from gptexp.models import build_model
from gptexp.spec import validate_spec
from gptexp.tokenizers import train_tokenizer
from tests.conftest import CORPUS, run_cli

transformers = pytest.importorskip("transformers")

TEXT = CORPUS.read_text(encoding="utf-8")[:20000]
SAMPLE = "ROMEO: <mask> is the sun, <eos> and Juliet<pad><pad>"


def make_run(runs_dir: Path, name: str, model: dict, objective: str = "clm", tokenizer: str = "bpe") -> Path:
    """A run directory as the trainer leaves it: spec, tokenizer, a checkpoint with non-trivial
    weights (norm scales, biases and all matrices drawn at random, so no mapping hides behind a
    zero or a one)."""
    spec = validate_spec({"name": name, "data": {"path": str(CORPUS)},
                          "tokenizer": {"kind": tokenizer, "vocab_size": 300} if tokenizer == "bpe" else {"kind": tokenizer},
                          "model": {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 24, **model},
                          "objective": {"kind": objective}}, name)
    tok = train_tokenizer(TEXT, kind=tokenizer, vocab_size=300) if tokenizer == "bpe" else train_tokenizer(TEXT, kind="char")
    torch.manual_seed(0)
    net = build_model(spec.model, tok.vocab_size, causal=objective == "clm")
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.3).add_(1.0 if parameter.dim() == 1 and parameter.numel() == 16 else 0.0)
    run_dir = runs_dir / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(spec.to_yaml())
    tok.save(run_dir / "tokenizer.json")
    save_checkpoint({"step": 7, "model": net.state_dict()}, run_dir / "checkpoints" / "last.pt")
    return run_dir


EXPORTABLE = {
    "gpt2": ({"positions": "learned", "mlp": "gelu", "norm": "layernorm"}, "GPT2LMHeadModel"),
    "gpt2-bias-untied": ({"positions": "learned", "bias": True, "tie_embeddings": False}, "GPT2LMHeadModel"),
    "neox": ({"positions": "rope", "mlp": "gelu", "norm": "layernorm"}, "GPTNeoXForCausalLM"),
    "neox-bias-untied": ({"positions": "rope", "bias": True, "tie_embeddings": False}, "GPTNeoXForCausalLM"),
    "llama": ({"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm"}, "LlamaForCausalLM"),
    "llama-bias-untied": ({"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": True, "tie_embeddings": False},
                          "LlamaForCausalLM"),
}


@pytest.mark.parametrize("name", sorted(EXPORTABLE))
def test_transformers_computes_what_gptexp_computes(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model_fields, model_class = EXPORTABLE[name]
    run_dir = make_run(tmp_path / "runs", name, model_fields)
    out = tmp_path / "hf"
    result = export_hf(run_dir, out)
    assert result["model_class"] == model_class
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= set(result["files"])

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert type(hf_model).__name__ == model_class and hf_model.dtype == torch.float32
    from gptexp.evaluate import load_trained_run

    run = load_trained_run(run_dir)
    batch = torch.randint(0, run.tokenizer.vocab_size, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = run.model(batch)
        theirs = hf_model(batch).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours, atol=1e-4, rtol=0), (theirs - ours).abs().max()

    prompt = batch[:1, :5]
    greedy_ours = run.model.generate(prompt, 12, temperature=0.0)
    greedy_theirs = hf_model.generate(prompt, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(prompt))
    assert greedy_theirs.tolist() == greedy_ours.tolist()

    hf_tok = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert hf_tok(SAMPLE, add_special_tokens=False)["input_ids"] == run.tokenizer.encode(SAMPLE, allow_special=True)
    assert hf_tok.decode(run.tokenizer.encode(SAMPLE, allow_special=True)) == SAMPLE
    specials = run.tokenizer.special_tokens
    assert (hf_tok.pad_token_id, hf_tok.mask_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.unk_token_id) == (
        specials["<pad>"], specials["<mask>"], specials["<bos>"], specials["<eos>"], specials["<unk>"])
    padded = hf_tok(["ROMEO:", "a longer line of text"], padding=True, return_tensors="pt")
    assert padded["input_ids"].shape[0] == 2 and (padded["input_ids"] == specials["<pad>"]).any()
    config = json.loads((out / "config.json").read_text())
    assert config["eos_token_id"] == specials["<eos>"] and config["pad_token_id"] == specials["<pad>"]
    assert config["tie_word_embeddings"] == model_fields.get("tie_embeddings", True)


def test_a_char_tokenizer_exports_too(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "runs", "char", {"positions": "learned"}, tokenizer="char")
    export_hf(run_dir, tmp_path / "hf")
    from gptexp.tokenizers import load_tokenizer

    ours = load_tokenizer(run_dir / "tokenizer.json")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert hf_tok(SAMPLE, add_special_tokens=False)["input_ids"] == ours.encode(SAMPLE, allow_special=True)
    assert hf_tok.mask_token == "<mask>" and hf_tok.pad_token == "<pad>"


@pytest.mark.parametrize("model, objective, reason", [
    ({"positions": "rope", "mlp": "swiglu", "norm": "layernorm"}, "clm", "Llama (the SwiGLU architecture) uses RMSNorm"),
    ({"positions": "rope", "mlp": "gelu", "norm": "rmsnorm"}, "clm", "GPT-NeoX (rope + GELU) uses LayerNorm"),
    ({"positions": "learned", "mlp": "swiglu", "norm": "layernorm"}, "clm", "no Hugging Face architecture combines these"),
    ({"positions": "learned", "mlp": "gelu", "norm": "rmsnorm"}, "clm", "GPT-2 (learned positions) uses LayerNorm"),
    ({"positions": "rope"}, "mlm", "a bidirectional model (objective mlm/mntp) has no exact"),
    ({"kind": "bigram"}, "clm", "model kind 'bigram' has no Hugging Face counterpart"),
])
def test_models_without_an_exact_counterpart_are_refused(model: dict, objective: str, reason: str) -> None:
    spec = validate_spec({"model": {"kind": "gpt", **model}, "objective": {"kind": objective}}, "x")
    with pytest.raises(ExportError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        hf_architecture(spec.model, causal=objective == "clm")


def test_the_cli_exports_and_refuses_with_exit_2(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    make_run(runs, "good", {"positions": "rope", "mlp": "swiglu", "norm": "rmsnorm"})
    make_run(runs, "mlm", {"positions": "rope"}, objective="mlm")
    ok = run_cli(["export", "good", "--format", "hf", "--out", str(tmp_path / "out"), "--runs-dir", str(runs)])
    assert ok.returncode == 0, ok.stderr
    assert "as LlamaForCausalLM" in ok.stdout and (tmp_path / "out" / "model.safetensors").exists()
    again = run_cli(["export", "good", "--out", str(tmp_path / "out"), "--runs-dir", str(runs)])
    assert again.returncode == 2 and "exists and is not an empty directory" in again.stderr
    refused = run_cli(["export", "mlm", "--out", str(tmp_path / "mlm-out"), "--runs-dir", str(runs)])
    assert refused.returncode == 2, refused.stderr
    assert "bidirectional model" in refused.stderr and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlm-out").exists()
    bad = run_cli(["export", "good", "--format", "onnx", "--out", str(tmp_path / "x"), "--runs-dir", str(runs)])
    assert bad.returncode == 2 and "--format 'onnx'" in bad.stderr


def test_safetensors_checkpoints_hold_the_same_weights(tmp_path: Path) -> None:
    from safetensors import safe_open

    run_dir = make_run(tmp_path / "runs", "st", {"positions": "learned"})
    result = export_safetensors(run_dir, tmp_path / "st")
    assert result["files"] == ["last.safetensors", "spec.yaml", "tokenizer.json"]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    with safe_open(str(tmp_path / "st" / "last.safetensors"), framework="pt") as f:
        metadata = f.metadata()
        assert metadata["gptexp_step"] == "7"
        assert yaml.safe_load(metadata["gptexp_spec"])["name"] == "st"
        tied = json.loads(metadata["gptexp_tied"])
        assert tied == {"lm_head.weight": "token_embedding.weight"}
        for key, tensor in state.items():
            assert torch.equal(f.get_tensor(tied.get(key, key)), tensor)
