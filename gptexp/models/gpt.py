"""A GPT in one file: token (+ learned) embeddings, pre-norm blocks of attention and MLP, a head.

The same module is a causal decoder (clm) or a bidirectional encoder (mlm, mntp): only the
attention mask differs. Options come from `GPTSpec`: positions learned | rope, mlp gelu | swiglu,
norm layernorm | rmsnorm, tied embeddings, bias. Top to bottom: loss and sampling helpers, RoPE, KV cache, attention, MLPs,
block, model.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from gptexp.spec import GPTSpec

IGNORE_INDEX = -100  # label of a position that predicts nothing (F.cross_entropy's default)


def language_model_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targets != -100; 0 (with a graph) when every target is -100.

    Summing and dividing by max(count, 1) gives the mean without F.cross_entropy's NaN on an
    all-ignored batch and without a host sync to test for it.
    """
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (targets != IGNORE_INDEX).sum().clamp(min=1)


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids (B, 1) from last-position logits (B, V); temperature 0 means greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth_best = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# ---------------------------------------------------------------------------------------------
# rotary position embedding


def rope_tables(block_size: int, head_size: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, each (block_size, head_size).

    Channel pairs (i, i + hs/2) rotate together by angle position * base^(-2i/hs); the angle is
    repeated in both halves so `apply_rope` is two elementwise products. Computed in float64
    once, at construction: recomputing per forward was a measurable cost at this model size.
    """
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # (hs/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float64), inv_freq)  # (T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate vectors x (..., hs) by their positions' angles; cos and sin broadcast against x.

    Rotation preserves norms and makes q_i . k_j depend on i - j only.
    """
    first, second = x.chunk(2, dim=-1)  # each (..., hs/2)
    rotated_half = torch.cat((-second, first), dim=-1)  # (..., hs)
    # .to() is a no-op in fp32; under bf16 autocast it keeps q, k and v in one dtype for SDPA.
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size.

    With it, generating a token runs the model on that one token instead of the whole context.
    `length` counts the stored positions; the model advances it after each forward.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, block_size: int, head_size: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (n_layer, batch_size, n_head, block_size, head_size)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new k, v (B, nh, T, hs); return all of its keys and values so far."""
        end = self.length + k.size(2)
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]  # each (B, nh, end, hs)


# ---------------------------------------------------------------------------------------------
# layers


class SelfAttention(nn.Module):
    """Multi-head self-attention: one fused qkv projection, all heads in one SDPA call."""

    def __init__(self, spec: GPTSpec, layer_index: int) -> None:
        super().__init__()
        self.n_head = spec.n_head
        self.layer_index = layer_index  # which slot of a KV cache is ours
        self.qkv = nn.Linear(spec.n_embd, 3 * spec.n_embd, bias=spec.bias)
        self.out_proj = nn.Linear(spec.n_embd, spec.n_embd, bias=spec.bias)
        # SDPA takes the attention dropout rate as a number; keeping it in a Dropout module lets
        # set_dropout change every rate in one place.
        self.attn_dropout = nn.Dropout(spec.dropout)
        self.resid_dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                attn_mask: torch.Tensor | None, is_causal: bool, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        # split + view + transpose gives SDPA the strides it handles fastest on CPU (a
        # permute/unbind of a (B, T, 3, nh, hs) view measured about 2% slower per step).
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head) for t in self.qkv(x).split(C, dim=2))  # each (B, T, nh, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # each (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_index, k, v)  # each (B, nh, cached + T, hs)
        dropout_p = self.attn_dropout.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.out_proj(y))


class GeluMLP(nn.Module):
    """The GPT-2 MLP: n_embd -> 4 n_embd -> GELU -> n_embd."""

    def __init__(self, spec: GPTSpec) -> None:
        super().__init__()
        self.up = nn.Linear(spec.n_embd, 4 * spec.n_embd, bias=spec.bias)
        self.out_proj = nn.Linear(4 * spec.n_embd, spec.n_embd, bias=spec.bias)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.out_proj(F.gelu(self.up(x))))


def swiglu_hidden_size(n_embd: int) -> int:
    """Hidden width that gives SwiGLU's three matrices (3 * C * H) the GELU MLP's 8 C^2 weights.

    `swiglu_hidden_size(64) -> 171` (3 * 64 * 171 = 32832 vs 8 * 64^2 = 32768).
    """
    return round(8 * n_embd / 3)


class SwiGLUMLP(nn.Module):
    """SiLU-gated MLP (Shazeer 2020): out_proj(silu(x W_gate) * x W_up), gate and up fused."""

    def __init__(self, spec: GPTSpec) -> None:
        super().__init__()
        hidden = swiglu_hidden_size(spec.n_embd)
        self.gate_up = nn.Linear(spec.n_embd, 2 * hidden, bias=spec.bias)
        self.out_proj = nn.Linear(hidden, spec.n_embd, bias=spec.bias)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # each (B, T, H)
        return self.dropout(self.out_proj(F.silu(gate) * up))


NORM_EPS = 1e-5  # LayerNorm's default, used for RMSNorm too (an export writes it into the HF config)


def norm_layer(spec: GPTSpec) -> nn.Module:
    """LayerNorm (bias per spec.bias) or RMSNorm (scale only: x / rms(x) * weight, as Llama's)."""
    if spec.norm == "rmsnorm":
        return nn.RMSNorm(spec.n_embd, eps=NORM_EPS)
    return nn.LayerNorm(spec.n_embd, eps=NORM_EPS, bias=spec.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, spec: GPTSpec, layer_index: int) -> None:
        super().__init__()
        self.attn_norm = norm_layer(spec)
        self.attn = SelfAttention(spec, layer_index)
        self.mlp_norm = norm_layer(spec)
        self.mlp = GeluMLP(spec) if spec.mlp == "gelu" else SwiGLUMLP(spec)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                attn_mask: torch.Tensor | None, is_causal: bool, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, attn_mask, is_causal, kv_cache)
        return x + self.mlp(self.mlp_norm(x))


# ---------------------------------------------------------------------------------------------
# the model


class GPT(nn.Module):
    def __init__(self, spec: GPTSpec, vocab_size: int, causal: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.vocab_size = vocab_size
        self.causal = causal
        self.token_embedding = nn.Embedding(vocab_size, spec.n_embd)
        self.position_embedding = nn.Embedding(spec.block_size, spec.n_embd) if spec.positions == "learned" else None
        self.embed_dropout = nn.Dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(spec, i) for i in range(spec.n_layer))
        self.final_norm = norm_layer(spec)
        self.lm_head = nn.Linear(spec.n_embd, vocab_size, bias=False)
        if spec.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # one matrix reads and writes tokens

        # Constant tables built once. Not persistent: checkpoints stay small, and a checkpoint
        # never carries a stale table.
        mask = torch.ones(spec.block_size, spec.block_size, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)  # (block, block), True = may attend
        if spec.positions == "rope":
            cos, sin = rope_tables(spec.block_size, spec.head_size)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block, hs)
            self.register_buffer("rope_sin", sin, persistent=False)

        self.apply(self._init_weights)
        # GPT-2: each block adds two projections to the residual stream; scaling them keeps its
        # variance from growing with depth.
        residual_std = 0.02 / math.sqrt(2 * spec.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.out_proj.weight, mean=0.0, std=residual_std)

    @classmethod
    def from_spec(cls, spec: GPTSpec, vocab_size: int, causal: bool) -> GPT:
        """The registry's constructor (gptexp.components): a built-in is configured by its spec."""
        return cls(spec, vocab_size, causal=causal)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Unique parameters: a tied matrix counts once (parameters() de-duplicates it)."""
        return sum(p.numel() for p in self.parameters())

    def set_dropout(self, p: float) -> None:
        """Set every dropout rate (embedding, attention, residual) for the following steps."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {p}")
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p

    def _attention_mask(self, T: int, start: int, key_padding_mask: torch.Tensor | None
                        ) -> tuple[torch.Tensor | None, bool]:
        """SDPA's (attn_mask, is_causal) for T queries at positions start..start+T-1; True = may attend."""
        if key_padding_mask is None:
            if not self.causal or T == 1:
                return None, False  # a single new query may see every stored key
            if start == 0:
                return None, True  # SDPA's own causal path: no mask tensor at all
            return self.causal_mask[start:start + T, :start + T], False  # (T, start + T)
        if start:
            raise ValueError("key_padding_mask cannot be combined with a KV cache")
        allowed = key_padding_mask[:, None, None, :]  # (B, 1, 1, T): real keys
        if self.causal:
            allowed = allowed & self.causal_mask[:T, :T]  # (B, 1, T, T)
        # A padding query may attend anywhere: its output is never read (its keys are masked for
        # everyone else), and a row with no allowed key would make softmax return NaN.
        return allowed | ~key_padding_mask[:, None, :, None], False  # (B, 1, T, T)

    def hidden_states(self, idx: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                      kv_cache: KVCache | None = None) -> torch.Tensor:
        """Final-norm outputs (B, T, C) for tokens idx (B, T), placed after the cache's tokens."""
        B, T = idx.shape
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.spec.block_size:
            raise ValueError(f"{start + T} positions exceed block_size {self.spec.block_size}")
        x = self.token_embedding(idx)  # (B, T, C)
        if self.position_embedding is not None:
            x = x + self.position_embedding.weight[start:start + T]  # (T, C) broadcast over B
        x = self.embed_dropout(x)
        rope = None
        if self.spec.positions == "rope":
            # (T, 1, hs): broadcasts over q and k laid out (B, T, nh, hs)
            rope = (self.rope_cos[start:start + T, None], self.rope_sin[start:start + T, None])
        attn_mask, is_causal = self._attention_mask(T, start, key_padding_mask)
        for block in self.blocks:
            x = block(x, rope, attn_mask, is_causal, kv_cache)
        if kv_cache is not None:
            kv_cache.length += T
        return self.final_norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, given targets (B, T) with -100 = not predicted, the mean loss.

        key_padding_mask (B, T): True = a real token, False = padding no query may attend to.
        """
        logits = self.lm_head(self.hidden_states(idx, key_padding_mask))  # (B, T, V)
        loss = None if targets is None else language_model_loss(logits, targets)
        return logits, loss

    def new_kv_cache(self, batch_size: int) -> KVCache:
        weight = self.token_embedding.weight
        return KVCache(self.spec.n_layer, batch_size, self.spec.n_head, self.spec.block_size,
                       self.spec.head_size, weight.device, weight.dtype)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Append max_new_tokens sampled tokens to idx (B, T0); returns (B, T0 + max_new_tokens).

        The model sees at most the last block_size tokens. With the cache each step runs on the
        new token only; once the context outgrows block_size the cached keys belong to a window
        that no longer exists (and would need positions past the table), so every later step
        recomputes the last block_size tokens: the same result as without the cache. Sampling
        runs in eval mode (no dropout); the previous mode is restored.
        """
        if not self.causal:
            raise ValueError("generate needs a causal model; this one attends in both directions")
        block_size = self.spec.block_size
        was_training = self.training
        self.eval()
        try:
            cache = None
            for _ in range(max_new_tokens):
                if cache is not None and cache.length == idx.size(1) - 1 and idx.size(1) <= block_size:
                    hidden = self.hidden_states(idx[:, -1:], kv_cache=cache)  # only the newest token
                else:
                    if use_cache:
                        cache = cache or self.new_kv_cache(idx.size(0))
                        cache.length = 0
                    hidden = self.hidden_states(idx[:, -block_size:], kv_cache=cache)
                logits = self.lm_head(hidden[:, -1])  # (B, V): only the last position is sampled
                idx = torch.cat((idx, sample_next_token(logits, temperature, top_k, generator)), dim=1)
        finally:
            self.train(was_training)
        return idx
