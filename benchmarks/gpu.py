"""GPU benchmark: a GPT-2-small-sized gptexp model trained for a fixed number of steps on one GPU.

    python benchmarks/gpu.py [--steps 50] [--warmup 10] [--batch-size 32] [--grad-accum 1] [--no-compile]

Prints one JSON object: tokens/s, MFU (gptexp/mfu.py: 6·N + 12·L·T·d FLOPs per token against the
device's dense bf16 peak), peak GPU memory, the step time, and the configuration. The model is
gptexp's GPT (build_model) at GPT-2 small's shape: 12 layers, 12 heads, width 768, block 1024,
vocabulary 50304 (GPT-2's 50257 padded to a multiple of 64, as nanoGPT and llm.c do), tied
embeddings, learned positions, GELU MLP, no bias, no dropout: 124M parameters. It trains with what
the trainer uses on CUDA: bf16 autocast, SDPA (flash), fused AdamW (gptexp.optim), torch.compile,
batches copied from pinned memory without blocking, gradient clipping, and one host sync per step
(reading the loss, as the trainer reads its per-step flags). Data are random token ids drawn before
timing, so the number is the model's, not the data pipeline's. Timing: CUDA events around the
timed steps, after `--warmup` steps (compilation included there).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gptexp.mfu import flops_per_token, mfu, peak_flops  # noqa: E402
from gptexp.models import build_model, num_parameters  # noqa: E402
from gptexp.optim import build_optimizer  # noqa: E402
from gptexp.spec import GPTSpec, OptimSpec  # noqa: E402

GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0, bias=False,
                  positions="learned", mlp="gelu", tie_embeddings=True)
VOCAB_SIZE = 50304


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences of 1024 tokens per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true", help="eager mode (the trainer's train.compile: false)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 2

    device = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (the loss, norms) on tensor cores
    spec = GPTSpec(**GPT2_SMALL)
    model = build_model(spec, VOCAB_SIZE, causal=True).to(device)
    optimizer = build_optimizer(model, OptimSpec(lr=6e-4, weight_decay=0.1, betas=[0.9, 0.95]), "cuda")
    train_model = model if args.no_compile else torch.compile(model)
    n_params = num_parameters(model)
    per_token = flops_per_token(n_params, spec.n_layer, spec.block_size, spec.n_embd)
    tokens_per_step = args.batch_size * spec.block_size * args.grad_accum

    # Random data drawn up front, pinned: each micro-step copies one batch host -> device without blocking.
    batches = [torch.randint(0, VOCAB_SIZE, (args.batch_size, spec.block_size + 1)).pin_memory()
               for _ in range(4)]

    def step(index: int) -> torch.Tensor:
        loss_sum = torch.zeros((), device=device)
        for micro in range(args.grad_accum):
            batch = batches[(index * args.grad_accum + micro) % len(batches)].to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = train_model(batch[:, :-1], batch[:, 1:])
            (loss / args.grad_accum).backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum / args.grad_accum

    compile_started = time.perf_counter()
    for index in range(args.warmup):
        loss = float(step(index))  # the trainer's one host read per step
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - compile_started
    torch.cuda.reset_peak_memory_stats()

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for index in range(args.warmup, args.warmup + args.steps):
        loss = float(step(index))
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    tokens_per_sec = tokens_per_step * args.steps / seconds
    name = torch.cuda.get_device_name(device)
    peak = peak_flops(name)
    utilisation = mfu(tokens_per_sec, per_token, 1, peak)
    result = {
        "device": name,
        "torch": torch.__version__,
        "parameters": n_params,
        "config": {**GPT2_SMALL, "vocab_size": VOCAB_SIZE, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
                   "compile": not args.no_compile, "precision": "bf16 autocast", "steps": args.steps,
                   "warmup": args.warmup},
        "tokens_per_step": tokens_per_step,
        "step_ms": round(seconds / args.steps * 1000, 2),
        "tokens_per_sec": round(tokens_per_sec, 1),
        "flops_per_token": per_token,
        "peak_bf16_flops": peak,
        "mfu": round(utilisation, 4) if utilisation is not None else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        "warmup_s": round(warmup_s, 1),
        "final_loss": round(loss, 4) if math.isfinite(loss) else None,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
