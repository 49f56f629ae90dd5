"""Training-step speed of gptexp's GPT against a plain SDPA PyTorch GPT of the same size.

    python benchmarks/train_throughput.py [--threads 1] [--steps 20] [--compile]

The seed project's default size: 4 layers, 8 heads, n_embd 64, block 128, batch 64. One full
training step (forward, backward, AdamW) for char and BPE vocabularies, CLM and MLM, eager (and
torch.compile with --compile). The reference model is written here, plainly: fused qkv Linear,
F.scaled_dot_product_attention, GELU MLP, tied embeddings — what a careful engineer writes in an
afternoon. Both are timed in the same process, interleaved, so outside load hits both alike;
the table reports medians and the ratio. The MLM masking share is make_batch's time over a step.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from gptexp.models import build_model
from gptexp.objectives import TokenInfo, Window, make_batch
from gptexp.spec import ClmSpec, GPTSpec, MlmSpec

SIZE = dict(n_layer=4, n_head=8, n_embd=64, block_size=128)
BATCH = 64
VOCABS = {"char": 70, "bpe": 2048}


class PlainBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, causal: bool) -> None:
        super().__init__()
        self.n_head, self.causal = n_head, causal
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.fc_out = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int, causal: bool) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(PlainBlock(n_embd, n_head, causal) for _ in range(n_layer))
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def make_window(vocab: int, generator: torch.Generator) -> Window:
    ids = torch.randint(0, vocab - 5, (BATCH, SIZE["block_size"] + 1), generator=generator)
    return Window(ids=ids, byte_counts=torch.ones_like(ids), word_starts=torch.rand(ids.shape, generator=generator) < 0.25)


def step_timer(model: nn.Module, objective, vocab: int):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    info = TokenInfo(vocab_size=vocab, special_ids=tuple(range(vocab - 5, vocab)), mask_id=vocab - 1, pad_id=vocab - 5)
    generator = torch.Generator().manual_seed(0)
    mask_times: list[float] = []

    def step() -> float:
        start = time.perf_counter()
        window = make_window(vocab, generator)
        mask_start = time.perf_counter()
        batch = make_batch(objective, window, info, generator)
        mask_times.append(time.perf_counter() - mask_start)
        _, loss = model(batch.inputs, batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step, mask_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust to outside load)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration (after 3 warm-up)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (about 18 s to compile each on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    modes = ["eager"] + (["compile"] if args.compile else [])
    print(f"threads={args.threads}, batch {BATCH}, block {SIZE['block_size']}, {SIZE['n_layer']} layers, "
          f"{SIZE['n_head']} heads, n_embd {SIZE['n_embd']}; median of {args.steps} steps\n")
    print("| objective | tokenizer | mode | gptexp ms/step | plain SDPA ms/step | plain/gptexp | gptexp tokens/s | masking share |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for objective in (ClmSpec(), MlmSpec(mask_prob=0.15)):
        causal = objective.kind == "clm"
        for tokenizer, vocab in VOCABS.items():
            for mode in modes:
                ours = build_model(GPTSpec(**SIZE), vocab, causal=causal)
                plain = PlainGPT(vocab, causal=causal, **SIZE)
                if mode == "compile":
                    ours, plain = torch.compile(ours), torch.compile(plain)
                ours_step, ours_masks = step_timer(ours, objective, vocab)
                plain_step, _ = step_timer(plain, objective, vocab)
                for _ in range(3):  # warm-up (and compilation)
                    ours_step(), plain_step()
                ours_masks.clear()
                ours_times, plain_times = [], []
                for _ in range(args.steps):  # interleaved: outside load hits both alike
                    ours_times.append(ours_step())
                    plain_times.append(plain_step())
                ours_ms, plain_ms = 1000 * statistics.median(ours_times), 1000 * statistics.median(plain_times)
                mask_share = statistics.median(ours_masks) / statistics.median(ours_times)
                tokens_per_sec = BATCH * SIZE["block_size"] / (ours_ms / 1000)
                print(f"| {objective.kind} | {tokenizer} | {mode} | {ours_ms:.1f} | {plain_ms:.1f} | "
                      f"{plain_ms / ours_ms:.2f} | {tokens_per_sec:,.0f} | {100 * mask_share:.1f}% |")
    assert math.isfinite(ours_ms)


if __name__ == "__main__":
    main()
