from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptexp.optim import build_optimizer, dropout_rate, learning_rate, parameter_groups
from gptexp.spec import ConstantDropoutSpec, GPTSpec, LinearDropoutSpec, OptimSpec


def test_warmup_is_linear_and_reaches_the_peak() -> None:
    spec = OptimSpec(lr=1.0, min_lr=0.0, warmup_steps=10)
    assert learning_rate(0, spec, 100) == pytest.approx(0.1)
    assert learning_rate(4, spec, 100) == pytest.approx(0.5)
    assert learning_rate(9, spec, 100) == pytest.approx(1.0)


def test_cosine_starts_at_peak_passes_midpoint_and_ends_at_min_lr() -> None:
    spec = OptimSpec(lr=1.0, min_lr=0.1, warmup_steps=10, schedule="cosine")
    max_steps = 111  # decay over steps 10..110
    assert learning_rate(10, spec, max_steps) == pytest.approx(1.0)
    assert learning_rate(60, spec, max_steps) == pytest.approx(0.55)
    assert learning_rate(110, spec, max_steps) == pytest.approx(0.1)
    assert learning_rate(500, spec, max_steps) == pytest.approx(0.1)  # never below the floor
    values = [learning_rate(s, spec, max_steps) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_constant_schedule_and_no_warmup() -> None:
    spec = OptimSpec(lr=0.5, min_lr=0.0, warmup_steps=0, schedule="constant")
    assert [learning_rate(s, spec, 10) for s in (0, 5, 9)] == [0.5, 0.5, 0.5]


def test_warmup_longer_than_the_run_never_divides_by_zero() -> None:
    spec = OptimSpec(lr=1.0, warmup_steps=100)
    assert learning_rate(4, spec, 5) == pytest.approx(0.05)


def test_dropout_schedules() -> None:
    assert dropout_rate(7, ConstantDropoutSpec(), 0.3, 10) == 0.3
    linear = LinearDropoutSpec(start=0.2, end=0.0)
    assert dropout_rate(0, linear, 0.9, 11) == pytest.approx(0.2)
    assert dropout_rate(5, linear, 0.9, 11) == pytest.approx(0.1)
    assert dropout_rate(10, linear, 0.9, 11) == pytest.approx(0.0)
    assert dropout_rate(50, linear, 0.9, 11) == pytest.approx(0.0)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=True)
        self.head.weight = self.embed.weight  # tied


def test_weight_decay_only_on_matrices_and_tied_weights_once() -> None:
    model = Tiny()
    decayed, plain = parameter_groups(model, 0.1)
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) == 1  # the tied embedding/head matrix, counted once
    assert len(plain["params"]) == 3  # norm weight, norm bias, head bias
    total = sum(p.numel() for group in (decayed, plain) for p in group["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_build_optimizer_on_the_real_model() -> None:
    from gptexp.models import build_model

    model = build_model(GPTSpec(n_layer=1, n_head=2, n_embd=16, block_size=8), vocab_size=20, causal=True)
    optimizer = build_optimizer(model, OptimSpec(weight_decay=0.05), "cpu")
    decay_groups = [g for g in optimizer.param_groups if g["weight_decay"] > 0]
    assert decay_groups and all(p.dim() >= 2 for p in decay_groups[0]["params"])
    assert not math.isclose(sum(p.numel() for g in optimizer.param_groups for p in g["params"]), 0)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert isinstance(optimizer, torch.optim.AdamW)
