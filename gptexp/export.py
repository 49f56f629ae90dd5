"""`gptexp export`: a trained run as a Hugging Face checkpoint directory, or its weights as safetensors.

    export_hf(run_dir, out)  -> out/config.json, model.safetensors, generation_config.json,
                                tokenizer.json, tokenizer_config.json, special_tokens_map.json

`transformers.AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load it with no network and no custom code. Each gptexp GPT maps to the Hugging Face architecture
that computes exactly the same function:

    positions  mlp     norm        ->  architecture
    learned    gelu    layernorm   ->  GPT-2     (GPT2LMHeadModel, activation "gelu")
    rope       gelu    layernorm   ->  GPT-NeoX  (GPTNeoXForCausalLM, sequential residual, full rotary)
    rope       swiglu  rmsnorm     ->  Llama     (LlamaForCausalLM)

gptexp's GELU is the exact (erf) one, HF's "gelu"; GPT-2's own default "gelu_new" is the tanh
approximation, so the config names "gelu" explicitly. Layers without bias (model.bias: false) are
exported with zero biases where the HF architecture always has them (GPT-2, GPT-NeoX): a zero bias
adds nothing, so the function is the same. Tied or untied embeddings map to tie_word_embeddings.
Everything else has no exact counterpart and is refused with ExportError (the CLI exits 2):
bidirectional (mlm, mntp) models, bigram and custom models, and the other position/mlp/norm mixes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gptexp.spec import GPTSpec, SpecError

EXPORT_FORMATS = ("hf", "safetensors")


class ExportError(SpecError):
    """A run that cannot be exported in the asked format; the message names the reason."""


# ---------------------------------------------------------------------------------------------
# which architecture


def hf_architecture(spec: Any, causal: bool) -> str:
    """"gpt2", "gpt_neox" or "llama" for a model that has an exact counterpart; ExportError otherwise."""
    if not causal:
        raise ExportError("a bidirectional model (objective mlm/mntp) has no exact Hugging Face causal-LM counterpart "
                          "(BERT-style encoders are post-norm with other embeddings); not exported")
    if not isinstance(spec, GPTSpec):
        raise ExportError(f"model kind {spec.kind!r} has no Hugging Face counterpart; only gpt models are exported")
    mix = (spec.positions, spec.mlp, spec.norm)
    if mix == ("learned", "gelu", "layernorm"):
        return "gpt2"
    if mix == ("rope", "gelu", "layernorm"):
        return "gpt_neox"
    if mix == ("rope", "swiglu", "rmsnorm"):
        return "llama"
    hints = {
        ("rope", "swiglu", "layernorm"): "Llama (the SwiGLU architecture) uses RMSNorm: train with model.norm: rmsnorm",
        ("rope", "gelu", "rmsnorm"): "GPT-NeoX (rope + GELU) uses LayerNorm: train with model.norm: layernorm",
        ("learned", "gelu", "rmsnorm"): "GPT-2 (learned positions) uses LayerNorm: train with model.norm: layernorm",
    }
    reason = hints.get(mix, "no Hugging Face architecture combines these: exportable are learned+gelu+layernorm (GPT-2), "
                            "rope+gelu+layernorm (GPT-NeoX), rope+swiglu+rmsnorm (Llama)")
    raise ExportError(f"model positions={spec.positions}, mlp={spec.mlp}, norm={spec.norm}: {reason}")


# ---------------------------------------------------------------------------------------------
# weights


def _bias(state: dict[str, torch.Tensor], key: str, size: int) -> torch.Tensor:
    """The layer's bias, or zeros where gptexp has none (adds nothing: the same function)."""
    return state[key] if key in state else torch.zeros(size, dtype=torch.float32)


def _gpt2_weights(spec: GPTSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    C = spec.n_embd
    out = {"transformer.wte.weight": state["token_embedding.weight"],
           "transformer.wpe.weight": state["position_embedding.weight"]}
    for i in range(spec.n_layer):
        g, h = f"blocks.{i}.", f"transformer.h.{i}."
        # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's weight
        out.update({
            h + "ln_1.weight": state[g + "attn_norm.weight"], h + "ln_1.bias": _bias(state, g + "attn_norm.bias", C),
            h + "attn.c_attn.weight": state[g + "attn.qkv.weight"].t(), h + "attn.c_attn.bias": _bias(state, g + "attn.qkv.bias", 3 * C),
            h + "attn.c_proj.weight": state[g + "attn.out_proj.weight"].t(), h + "attn.c_proj.bias": _bias(state, g + "attn.out_proj.bias", C),
            h + "ln_2.weight": state[g + "mlp_norm.weight"], h + "ln_2.bias": _bias(state, g + "mlp_norm.bias", C),
            h + "mlp.c_fc.weight": state[g + "mlp.up.weight"].t(), h + "mlp.c_fc.bias": _bias(state, g + "mlp.up.bias", 4 * C),
            h + "mlp.c_proj.weight": state[g + "mlp.out_proj.weight"].t(), h + "mlp.c_proj.bias": _bias(state, g + "mlp.out_proj.bias", C),
        })
    out["transformer.ln_f.weight"] = state["final_norm.weight"]
    out["transformer.ln_f.bias"] = _bias(state, "final_norm.bias", C)
    out["lm_head.weight"] = state["lm_head.weight"]
    return out


def _neox_qkv(tensor: torch.Tensor, n_head: int) -> torch.Tensor:
    """gptexp's fused rows [q heads | k heads | v heads] -> NeoX's per head [q_h | k_h | v_h]."""
    hs = tensor.size(0) // (3 * n_head)
    return tensor.reshape(3, n_head, hs, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)


def _neox_weights(spec: GPTSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    C = spec.n_embd
    out = {"gpt_neox.embed_in.weight": state["token_embedding.weight"]}
    for i in range(spec.n_layer):
        g, h = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        out.update({
            h + "input_layernorm.weight": state[g + "attn_norm.weight"], h + "input_layernorm.bias": _bias(state, g + "attn_norm.bias", C),
            h + "attention.query_key_value.weight": _neox_qkv(state[g + "attn.qkv.weight"], spec.n_head),
            h + "attention.query_key_value.bias": _neox_qkv(_bias(state, g + "attn.qkv.bias", 3 * C), spec.n_head),
            h + "attention.dense.weight": state[g + "attn.out_proj.weight"], h + "attention.dense.bias": _bias(state, g + "attn.out_proj.bias", C),
            h + "post_attention_layernorm.weight": state[g + "mlp_norm.weight"],
            h + "post_attention_layernorm.bias": _bias(state, g + "mlp_norm.bias", C),
            h + "mlp.dense_h_to_4h.weight": state[g + "mlp.up.weight"], h + "mlp.dense_h_to_4h.bias": _bias(state, g + "mlp.up.bias", 4 * C),
            h + "mlp.dense_4h_to_h.weight": state[g + "mlp.out_proj.weight"], h + "mlp.dense_4h_to_h.bias": _bias(state, g + "mlp.out_proj.bias", C),
        })
    out["gpt_neox.final_layer_norm.weight"] = state["final_norm.weight"]
    out["gpt_neox.final_layer_norm.bias"] = _bias(state, "final_norm.bias", C)
    out["lm_head.weight"] = state["lm_head.weight"]  # "embed_out" before transformers 5
    return out


def _llama_weights(spec: GPTSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    C = spec.n_embd
    out = {"model.embed_tokens.weight": state["token_embedding.weight"]}
    for i in range(spec.n_layer):
        g, h = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[g + "attn.qkv.weight"].split(C, dim=0)
        gate, up = state[g + "mlp.gate_up.weight"].chunk(2, dim=0)  # gptexp: silu(gate) * up
        out.update({
            h + "input_layernorm.weight": state[g + "attn_norm.weight"],
            h + "self_attn.q_proj.weight": q, h + "self_attn.k_proj.weight": k, h + "self_attn.v_proj.weight": v,
            h + "self_attn.o_proj.weight": state[g + "attn.out_proj.weight"],
            h + "post_attention_layernorm.weight": state[g + "mlp_norm.weight"],
            h + "mlp.gate_proj.weight": gate, h + "mlp.up_proj.weight": up, h + "mlp.down_proj.weight": state[g + "mlp.out_proj.weight"],
        })
        if spec.bias:
            qb, kb, vb = state[g + "attn.qkv.bias"].split(C)
            gate_b, up_b = state[g + "mlp.gate_up.bias"].chunk(2)
            out.update({h + "self_attn.q_proj.bias": qb, h + "self_attn.k_proj.bias": kb, h + "self_attn.v_proj.bias": vb,
                        h + "self_attn.o_proj.bias": state[g + "attn.out_proj.bias"],
                        h + "mlp.gate_proj.bias": gate_b, h + "mlp.up_proj.bias": up_b,
                        h + "mlp.down_proj.bias": state[g + "mlp.out_proj.bias"]})
    out["model.norm.weight"] = state["final_norm.weight"]
    out["lm_head.weight"] = state["lm_head.weight"]
    return out


# ---------------------------------------------------------------------------------------------
# configs


def hf_config(architecture: str, spec: GPTSpec, vocab_size: int, special_ids: dict[str, int]) -> Any:
    """The transformers config of the exported model (dropout 0: an export is for inference)."""
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    from gptexp.models.gpt import NORM_EPS, swiglu_hidden_size

    ids = {"bos_token_id": special_ids.get("bos"), "eos_token_id": special_ids.get("eos"),
           "pad_token_id": special_ids.get("pad")}
    if architecture == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=spec.block_size, n_embd=spec.n_embd, n_layer=spec.n_layer,
                          n_head=spec.n_head, n_inner=4 * spec.n_embd, activation_function="gelu",
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=NORM_EPS,
                          scale_attn_weights=True, tie_word_embeddings=spec.tie_embeddings,
                          architectures=["GPT2LMHeadModel"], **ids)
    if architecture == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=spec.n_embd, num_hidden_layers=spec.n_layer,
                             num_attention_heads=spec.n_head, intermediate_size=4 * spec.n_embd, hidden_act="gelu",
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
                             max_position_embeddings=spec.block_size, layer_norm_eps=NORM_EPS,
                             use_parallel_residual=False, attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0,
                             tie_word_embeddings=spec.tie_embeddings, architectures=["GPTNeoXForCausalLM"], **ids)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=spec.n_embd, intermediate_size=swiglu_hidden_size(spec.n_embd),
                       num_hidden_layers=spec.n_layer, num_attention_heads=spec.n_head, num_key_value_heads=spec.n_head,
                       head_dim=spec.head_size, hidden_act="silu", max_position_embeddings=spec.block_size,
                       rms_norm_eps=NORM_EPS, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       attention_bias=spec.bias, mlp_bias=spec.bias, attention_dropout=0.0,
                       tie_word_embeddings=spec.tie_embeddings, architectures=["LlamaForCausalLM"], **ids)


_WEIGHTS = {"gpt2": _gpt2_weights, "gpt_neox": _neox_weights, "llama": _llama_weights}


# ---------------------------------------------------------------------------------------------
# the exports


def _load_run(run_dir: Path, checkpoint: str) -> Any:
    from gptexp.evaluate import load_trained_run

    return load_trained_run(run_dir, checkpoint)


def _empty_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out}: exists and is not an empty directory")
    out.mkdir(parents=True, exist_ok=True)


def export_hf(run_dir: Path, out: Path, checkpoint: str = "best") -> dict[str, Any]:
    """Write the run as a Hugging Face directory; returns what was written (architecture, files, step)."""
    try:
        import transformers
    except ImportError:
        raise ExportError("--format hf needs transformers and safetensors (pip install 'gptexp[export]')") from None
    from gptexp.tokenizers.hf import write_hf_tokenizer_dir
    from gptexp.tokenizers.roles import role_ids

    from gptexp.components import build_objective

    run = _load_run(run_dir, checkpoint)
    architecture = hf_architecture(run.spec.model, build_objective(run.spec.objective).causal)
    vocab_size = run.tokenizer.vocab_size
    try:
        write_tokenizer = write_hf_tokenizer_dir(run.tokenizer, model_max_length=run.spec.model.block_size)
    except (ValueError, NotImplementedError) as error:
        raise ExportError(f"tokenizer: {error}") from None
    state = {k: v.detach().float().cpu() for k, v in run.model.state_dict().items()}
    weights = _WEIGHTS[architecture](run.spec.model, state)
    config = hf_config(architecture, run.spec.model, vocab_size, role_ids(run.tokenizer.special_tokens))

    transformers.utils.logging.disable_progress_bar()  # one line of output from the CLI, not a shard bar
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every HF weight gets a value; non-persistent buffers (rotary tables, masks) are rebuilt
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {"lm_head.weight"} if run.spec.model.tie_embeddings else set()
    if [k for k in missing if k not in tied] or unexpected:
        raise RuntimeError(f"export mapping out of date: missing {missing}, unexpected {unexpected}")
    model.eval()
    _empty_dir(out)
    model.save_pretrained(out, safe_serialization=True)
    write_tokenizer(out)
    return {"architecture": architecture, "model_class": config.architectures[0], "step": run.step,
            "checkpoint": run.checkpoint.name, "files": sorted(p.name for p in out.iterdir())}


def export_safetensors(run_dir: Path, out: Path) -> dict[str, Any]:
    """Each checkpoint of the run (best, last) as <name>.safetensors with its step and the spec as
    metadata, plus the run's spec.yaml and tokenizer.json: the weights without pickle."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError("--format safetensors needs safetensors (pip install 'gptexp[export]')") from None
    import shutil

    from gptexp.checkpoint import CheckpointError, load_checkpoint
    from gptexp.tracking import RunStore

    store = RunStore(run_dir)
    written = []
    checkpoints = [p for p in (store.best_checkpoint, store.last_checkpoint) if p.exists()]
    if not checkpoints:
        raise ExportError(f"run {store.run_id}: no checkpoint yet in {store.checkpoint_dir}")
    _empty_dir(out)
    for path in checkpoints:
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            raise ExportError(str(error)) from None
        tensors, seen = {}, {}
        for key, tensor in state["model"].items():
            if tensor.data_ptr() in seen:  # a tied matrix is stored once (safetensors refuses shared memory)
                continue
            seen[tensor.data_ptr()] = key
            tensors[key] = tensor.detach().cpu().contiguous()
        metadata = {"format": "pt", "gptexp_step": str(int(state["step"])),
                    "gptexp_spec": store.spec_path.read_text(encoding="utf-8"),
                    "gptexp_tied": json.dumps({k: seen[v.data_ptr()] for k, v in state["model"].items()
                                               if seen[v.data_ptr()] != k})}
        target = out / f"{path.stem}.safetensors"
        save_file(tensors, str(target), metadata=metadata)
        written.append(target.name)
    for extra in (store.spec_path, store.tokenizer_path):
        shutil.copyfile(extra, out / extra.name)
        written.append(extra.name)
    return {"files": written}
