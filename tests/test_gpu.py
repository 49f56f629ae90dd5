"""The CUDA training path (bf16 autocast, flash attention, fused AdamW, torch.compile, pinned
non-blocking copies, MFU). Runs only where a CUDA GPU is present; elsewhere every test skips with the
reason. benchmarks/gpu_session.sh runs this file and benchmarks/gpu.py on a GPU machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from gptexp.mfu import peak_flops
from gptexp.models import build_model
from gptexp.optim import build_optimizer
from gptexp.spec import GPTSpec, OptimSpec
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here; benchmarks/gpu_session.sh runs these on a GPU machine")


def test_attention_runs_on_the_flash_kernel_and_the_optimizer_is_fused() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    model = build_model(GPTSpec(n_layer=2, n_head=4, n_embd=256, block_size=256), 512, causal=True).cuda()
    optimizer = build_optimizer(model, OptimSpec(), "cuda")
    assert optimizer.defaults["fused"] is True
    idx = torch.randint(0, 512, (4, 256), device="cuda")
    # Only the flash kernel is allowed: the model's SDPA call must be one it accepts (bf16, causal, no mask).
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    loss.backward()
    optimizer.step()
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)


def test_a_cuda_run_trains_compiled_in_bf16_and_logs_tokens_per_sec_and_mfu(
        tiny_spec: Callable[..., Path], runs_dir: Path) -> None:
    spec = tiny_spec(model={"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0},
                     train={"device": "cuda", "batch_size": 16, "max_steps": 40, "eval_every": 20,
                            "checkpoint_every": 20, "log_every": 10})
    result = run_cli(["run", str(spec), "--runs-dir", str(runs_dir)], timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [d for d in runs_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 40 and summary["tokens_per_sec"] > 0
    assert summary["val/bpb"] < 5.0  # it learned something in 40 steps (a uniform char model is ~6 bits)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "train/loss" in row]
    if peak_flops(torch.cuda.get_device_name()) is not None:
        assert all(0 < row["mfu"] < 1 for row in train_rows) and 0 < summary["mfu"] < 1
    else:
        assert "mfu" not in summary
