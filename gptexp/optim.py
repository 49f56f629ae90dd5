"""AdamW parameter groups and the LR / dropout schedules, as pure functions of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from gptexp.spec import DropoutScheduleSpec, OptimSpec


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (embeddings, Linear weights) only; never on biases or norm gains.

    Tied weights appear once (named_parameters de-duplicates shared tensors).
    """
    decayed = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    not_decayed = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, spec: OptimSpec, device_type: str) -> torch.optim.AdamW:
    # The fused kernel exists for CUDA only; on CPU the default (foreach) path is the fast one.
    fused = device_type == "cuda"
    return torch.optim.AdamW(
        parameter_groups(model, spec.weight_decay), lr=spec.lr, betas=tuple(spec.betas), fused=fused
    )


def learning_rate(step: int, spec: OptimSpec, max_steps: int) -> float:
    """LR for optimizer step `step` (0-based): linear warmup to `lr`, then constant or cosine to `min_lr`.

    With lr=1, warmup=10: step 0 -> 0.1, step 9 -> 1.0; cosine reaches min_lr at step max_steps - 1.
    """
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return spec.lr
    decay_steps = max(1, max_steps - 1 - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / decay_steps)
    return spec.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (spec.lr - spec.min_lr)


def dropout_rate(step: int, spec: DropoutScheduleSpec, base_rate: float, max_steps: int) -> float:
    """Dropout for step `step`: the model's own rate (constant) or linear from `start` to `end`.

    linear start=0.2 end=0.0 over 11 steps: step 0 -> 0.2, step 5 -> 0.1, step 10 -> 0.0.
    """
    if spec.kind == "constant":
        return base_rate
    progress = min(1.0, step / max(1, max_steps - 1))
    return spec.start + (spec.end - spec.start) * progress
