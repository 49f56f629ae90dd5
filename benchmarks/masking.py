"""Cost of building masked batches, as a share of a training step.

    python benchmarks/masking.py [--batch-size 64] [--block-size 128] [--threads 2]

Times make_batch (mlm, mntp; token and word units) at B=64, T=128 against one forward + backward
of the default GPT (4 layers, 8 heads, n_embd 64). Masking runs on the data path of every step,
so the goal is below 5% of the step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from gptexp.models import GPT
from gptexp.objectives import TokenInfo, Window, make_batch
from gptexp.spec import GPTSpec, MlmSpec, MntpSpec


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    B, T, V = args.batch_size, args.block_size, args.vocab_size

    info = TokenInfo(vocab_size=V, special_ids=tuple(range(V - 5, V)), mask_id=V - 1, pad_id=V - 5)
    g = torch.Generator().manual_seed(0)
    window = Window(ids=torch.randint(0, V - 5, (B, T + 1), generator=g),
                    byte_counts=torch.randint(1, 5, (B, T + 1), generator=g),
                    word_starts=torch.rand(B, T + 1, generator=g) < 0.3)

    model = GPT(GPTSpec(block_size=T, dropout=0.1), V, causal=False).train()
    inputs, labels = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))

    def train_step() -> None:
        _, loss = model(inputs, labels)
        model.zero_grad(set_to_none=True)
        loss.backward()

    step = median_seconds(train_step, max(5, args.repeats // 2))
    print(f"B={B}, T={T}, vocab {V}, {args.threads} threads; median of {args.repeats}; "
          f"forward + backward of the default GPT: {step * 1000:.1f} ms\n")
    print("| make_batch | ms | share of a training step |")
    print("|---|---:|---:|")
    for name, objective in [("mlm, token", MlmSpec()), ("mlm, word", MlmSpec(mask_unit="word")),
                            ("mntp, token", MntpSpec()), ("mntp, word", MntpSpec(mask_unit="word"))]:
        seconds = median_seconds(lambda: make_batch(objective, window, info, g), args.repeats)
        print(f"| {name} | {seconds * 1000:.2f} | {seconds / step:.1%} |")


if __name__ == "__main__":
    main()
