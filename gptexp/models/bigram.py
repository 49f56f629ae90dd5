"""The bigram baseline: a vocab x vocab table whose row for a token is the next token's logits.

It sees one token, so it needs no positions, attention or padding mask; it keeps the GPT's
interface (forward, generate, set_dropout, num_parameters) so the trainer treats both alike.
"""

from __future__ import annotations

import torch
from torch import nn

from gptexp.models.gpt import language_model_loss, sample_next_token
from gptexp.spec import BigramSpec


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, block_size: int = 128) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.block_size = block_size  # the training window length; the model itself looks at one token
        self.causal = True  # trivially: position t sees token t only
        self.table = nn.Embedding(vocab_size, vocab_size)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)  # near-uniform start, as in the GPT

    @classmethod
    def from_spec(cls, spec: BigramSpec, vocab_size: int, causal: bool) -> Bigram:
        """The registry's constructor; causal is ignored (one token seen either way)."""
        return cls(vocab_size, block_size=spec.block_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_dropout(self, p: float) -> None:
        """No dropout layers: nothing to change."""

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) = table[idx]; key_padding_mask is accepted and unused (no attention)."""
        logits = self.table(idx)  # (B, T, V)
        loss = None if targets is None else language_model_loss(logits, targets)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Append max_new_tokens tokens to idx (B, T0); use_cache is ignored (nothing to cache)."""
        for _ in range(max_new_tokens):
            logits = self.table(idx[:, -1])  # (B, V): the last token is all the model looks at
            idx = torch.cat((idx, sample_next_token(logits, temperature, top_k, generator)), dim=1)
        return idx
