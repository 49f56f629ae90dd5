"""Models: the GPT (causal or bidirectional) and the bigram baseline, built from a model spec."""

from __future__ import annotations

from torch import nn

from gptexp.models.bigram import Bigram
from gptexp.models.gpt import GPT, KVCache
from gptexp.spec import BigramSpec, GPTSpec

__all__ = ["GPT", "Bigram", "KVCache", "build_model"]


def build_model(spec: GPTSpec | BigramSpec, vocab_size: int, causal: bool) -> nn.Module:
    """The model a spec describes; causal=False gives the GPT bidirectional attention (mlm, mntp).

    A bigram sees one token, so it is the same model either way.
    """
    if isinstance(spec, GPTSpec):
        return GPT(spec, vocab_size, causal=causal)
    if isinstance(spec, BigramSpec):
        return Bigram(vocab_size, block_size=spec.block_size)
    raise TypeError(f"unknown model spec {type(spec).__name__}")
