"""Models: the GPT (causal or bidirectional), the bigram baseline, and any class a spec names.

Every model, built-in or custom, is built through gptexp.components (one registry). The helpers
below call a model's optional methods (see gptexp.protocols.LanguageModel) when it has them and
fall back to what any nn.Module allows otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gptexp.models.bigram import Bigram
from gptexp.models.gpt import GPT, KVCache, sample_next_token

__all__ = ["GPT", "Bigram", "KVCache", "build_model", "generate", "num_parameters", "set_dropout"]


def build_model(spec: Any, vocab_size: int, causal: bool) -> nn.Module:
    """The model a model spec describes; causal=False asks for bidirectional attention (mlm, mntp).

    A bigram sees one token, so it is the same model either way.
    """
    from gptexp.components import build_model as build

    return build(spec, vocab_size, causal)


def num_parameters(model: nn.Module) -> int:
    """The model's own count when it has one (a tied matrix counts once), else every parameter."""
    count = getattr(model, "num_parameters", None)
    return int(count()) if callable(count) else sum(p.numel() for p in model.parameters())


def set_dropout(model: nn.Module, p: float) -> None:
    """Set the dropout rate for the following steps, if the model lets it be set."""
    setter = getattr(model, "set_dropout", None)
    if callable(setter):
        setter(p)


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, block_size: int, temperature: float = 1.0,
             top_k: int | None = None, generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Append max_new_tokens sampled tokens to idx (B, T0): the model's own generate (KV cache)
    when it has one, else one forward over the last block_size tokens per new token."""
    own = getattr(model, "generate", None)
    if callable(own):
        return own(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator, use_cache=use_cache)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            logits, _ = model(idx[:, -block_size:])
            idx = torch.cat((idx, sample_next_token(logits[:, -1], temperature, top_k, generator)), dim=1)
    finally:
        model.train(was_training)
    return idx
