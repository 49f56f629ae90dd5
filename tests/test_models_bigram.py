"""The bigram baseline: a lookup table with the GPT's interface."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptexp.models import Bigram, build_model
from gptexp.spec import BigramSpec

V = 7


def make() -> Bigram:
    torch.manual_seed(0)
    return build_model(BigramSpec(block_size=8), V, causal=True)


def test_logits_are_table_rows_and_loss_is_cross_entropy():
    model = make()
    idx, targets = torch.randint(V, (3, 8)), torch.randint(V, (3, 8))
    targets[0, :2] = -100
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 8, V)
    torch.testing.assert_close(logits, model.table.weight[idx])
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))
    assert model(idx)[1] is None


def test_zero_table_gives_loss_ln_vocab_and_all_ignored_gives_zero():
    model = make()
    nn.init.zeros_(model.table.weight)
    idx = torch.randint(V, (2, 5))
    assert model(idx, torch.randint(V, (2, 5)))[1].item() == pytest.approx(math.log(V))
    assert model(idx, torch.full((2, 5), -100))[1].item() == 0.0


def test_interface_parameters_dropout_padding():
    model = make()
    assert model.num_parameters() == V * V
    model.set_dropout(0.5)  # no dropout layers: a no-op that must not fail
    idx = torch.randint(V, (2, 5))
    padding = torch.tensor([[True] * 5, [True, True, False, False, False]])
    torch.testing.assert_close(model(idx, key_padding_mask=padding)[0], model(idx)[0])


def test_generate_follows_the_table():
    model = make()
    with torch.no_grad():
        model.table.weight.copy_(torch.eye(V).roll(1, dims=1))  # token t -> t + 1 (mod V)
    out = model.generate(torch.tensor([[3], [6]]), 4, temperature=0.0, use_cache=False)
    assert out.tolist() == [[3, 4, 5, 6, 0], [6, 0, 1, 2, 3]]
    sampled = model.generate(torch.zeros(2, 1, dtype=torch.long), 20, generator=torch.Generator().manual_seed(1))
    assert sampled.shape == (2, 21) and sampled.max() < V
