"""The GPT: shapes, loss, masks (causal, bidirectional, key padding), RoPE, SwiGLU, dropout, KV cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gptexp.models import GPT, build_model
from gptexp.models import gpt as gpt_module
from gptexp.models.gpt import GeluMLP, SwiGLUMLP, apply_rope
from gptexp.spec import GPTSpec

V = 11  # vocab size of every test model


def tiny(**overrides) -> GPTSpec:
    fields = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.0)
    return GPTSpec(**{**fields, **overrides})


def make(causal: bool = True, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return build_model(tiny(**overrides), V, causal=causal).eval()


VARIANTS = [dict(positions=p, mlp=m) for p in ("learned", "rope") for m in ("gelu", "swiglu")]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v['positions']}-{v['mlp']}")
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_shapes_loss_and_backward(variant, causal):
    model = make(causal, **variant).train()
    idx = torch.randint(V, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, V) and loss is None
    targets = torch.randint(V, (3, 10))
    targets[0, :4] = -100
    logits, loss = model(idx, targets)
    assert loss.shape == () and torch.isfinite(loss)
    expected = nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_uniform_logits_give_loss_ln_vocab():
    model = make(tie_embeddings=False)
    nn.init.zeros_(model.lm_head.weight)
    targets = torch.randint(V, (2, 8))
    targets[1, 3:] = -100  # ignored targets do not change the mean
    _, loss = model(torch.randint(V, (2, 8)), targets)
    assert loss.item() == pytest.approx(math.log(V), rel=1e-6)


def test_all_ignored_targets_give_zero_loss_not_nan():
    model = make().train()
    _, loss = model(torch.randint(V, (2, 8)), torch.full((2, 8), -100))
    assert loss.item() == 0.0
    loss.backward()  # still a graph: a batch with nothing to predict must not crash training


def test_sequence_longer_than_block_size_is_rejected():
    with pytest.raises(ValueError, match="block_size"):
        make()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_causal_model_does_not_look_ahead(positions):
    model = make(True, positions=positions)
    idx = torch.randint(V, (2, 12))
    changed = idx.clone()
    changed[:, 8] = (idx[:, 8] + 1) % V
    before, after = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])


@pytest.mark.parametrize("positions", ["learned", "rope"])
def test_bidirectional_model_looks_both_ways(positions):
    model = make(False, positions=positions)
    idx = torch.randint(V, (2, 12))
    changed = idx.clone()
    changed[:, 8] = (idx[:, 8] + 1) % V
    before, after = model(idx)[0], model(changed)[0]
    assert not torch.allclose(before[:, :8], after[:, :8])


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_padded_keys_change_nothing_for_real_tokens(causal, positions):
    model = make(causal, positions=positions)
    lengths = [5, 9, 12]
    rows = [torch.randint(V, (n,)) for n in lengths]
    padded = torch.randint(V, (3, 12))  # garbage in the padding on purpose
    key_padding_mask = torch.zeros(3, 12, dtype=torch.bool)
    for row, (tokens, n) in enumerate(zip(rows, lengths)):
        padded[row, :n] = tokens
        key_padding_mask[row, :n] = True
    logits = model(padded, key_padding_mask=key_padding_mask)[0]
    assert torch.isfinite(logits).all()  # padding queries too: no NaN from an empty softmax row
    for row, (tokens, n) in enumerate(zip(rows, lengths)):
        alone = model(tokens[None])[0][0]  # the same tokens with no padding at all
        torch.testing.assert_close(logits[row, :n], alone, atol=1e-5, rtol=1e-5)
    other_padding = torch.where(key_padding_mask, padded, (padded + 3) % V)
    again = model(other_padding, key_padding_mask=key_padding_mask)[0]
    torch.testing.assert_close(again[key_padding_mask], logits[key_padding_mask], atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    model = make(positions="rope")
    head_size = model.spec.head_size
    torch.manual_seed(1)
    q, k = torch.randn(head_size), torch.randn(head_size)

    def score(i: int, j: int) -> float:
        cos, sin = model.rope_cos, model.rope_sin  # (block, hs)
        return (apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j])).item()

    for offset in (-5, 0, 3, 7):
        scores = [score(i, i - offset) for i in range(max(offset, 0), 16 + min(offset, 0))]
        assert max(scores) - min(scores) < 1e-4, (offset, scores)
    assert abs(score(5, 2) - score(5, 4)) > 1e-3  # and the distance does matter
    # rotation keeps lengths: rope changes directions, never magnitudes
    assert apply_rope(q, model.rope_cos[9], model.rope_sin[9]).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


def test_rope_tables_are_built_once_not_per_forward(monkeypatch):
    model = make(positions="rope")

    def fail(*args, **kwargs):
        raise AssertionError("rope tables rebuilt during forward")

    monkeypatch.setattr(gpt_module, "rope_tables", fail)
    model(torch.randint(V, (2, 8)))
    assert "rope_cos" not in model.state_dict()  # constants: not carried by checkpoints


@pytest.mark.parametrize("n_embd", [16, 48, 64, 128, 384, 768])
@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_matches_gelu_parameter_count(n_embd, bias):
    spec = GPTSpec(n_layer=2, n_embd=n_embd, n_head=4, block_size=16, bias=bias)
    gelu = sum(p.numel() for p in GeluMLP(spec).parameters())
    swiglu = sum(p.numel() for p in SwiGLUMLP(spec).parameters())
    assert abs(swiglu - gelu) / gelu < 0.02
    whole_gelu = GPT(spec.model_copy(update={"mlp": "gelu"}), V).num_parameters()
    whole_swiglu = GPT(spec.model_copy(update={"mlp": "swiglu"}), V).num_parameters()
    assert abs(whole_swiglu - whole_gelu) / whole_gelu < 0.02


def test_weight_tying_and_parameter_count():
    tied, untied = make(tie_embeddings=True), make(tie_embeddings=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == V * 16
    # by hand: embeddings (tokens + positions), per layer 2 LayerNorms + qkv + out + 4x MLP, final norm
    C, L = 16, 2
    assert tied.num_parameters() == V * C + 16 * C + L * (2 * C + 3 * C * C + C * C + 8 * C * C) + C


def test_bias_flag_controls_every_bias():
    assert not [n for n, _ in make(bias=False).named_parameters() if n.endswith("bias")]
    names = [n for n, _ in make(bias=True).named_parameters() if n.endswith("bias")]
    assert any("qkv" in n for n in names) and any("norm" in n for n in names)


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTSpec(n_layer=8, n_head=4, n_embd=128, block_size=32, tie_embeddings=False), V)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.1)
    residual_std = 0.02 / math.sqrt(2 * 8)
    for block in model.blocks:
        assert block.attn.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)


def test_set_dropout_changes_every_rate_at_run_time():
    model = make(dropout=0.0).train()
    idx = torch.randint(V, (2, 12))
    torch.testing.assert_close(model(idx)[0], model(idx)[0])  # p = 0: train mode is deterministic
    model.set_dropout(0.5)
    rates = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.5}
    assert not torch.allclose(model(idx)[0], model(idx)[0])
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])  # eval never drops
    model.train()
    model.set_dropout(0.0)
    torch.testing.assert_close(model(idx)[0], model(idx)[0])


def test_set_dropout_reaches_attention():
    model = make().train()
    model.set_dropout(0.0)
    for block in model.blocks:
        block.attn.attn_dropout.p = 0.9  # only attention dropout on
    idx = torch.randint(V, (2, 12))
    assert not torch.allclose(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize("positions", ["learned", "rope"])
@pytest.mark.parametrize("prompt_length", [1, 6, 20], ids=["one", "short", "past-block"])
def test_kv_cache_greedy_equals_recomputation(positions, prompt_length):
    model = make(positions=positions, seed=3)
    prompt = torch.randint(V, (2, prompt_length))
    # 16-token block: every case runs past block_size, where the cache must fall back
    cached = model.generate(prompt, 24, temperature=0.0, use_cache=True)
    uncached = model.generate(prompt, 24, temperature=0.0, use_cache=False)
    assert cached.shape == (2, prompt_length + 24)
    assert torch.equal(cached[:, :prompt_length], prompt)
    assert torch.equal(cached, uncached)


def test_kv_cache_logits_match_full_forward():
    model = make(positions="rope", seed=4)
    idx = torch.randint(V, (2, 10))
    full = model(idx)[0]
    cache = model.new_kv_cache(2)
    first = model.lm_head(model.hidden_states(idx[:, :4], kv_cache=cache))  # prefill
    middle = model.lm_head(model.hidden_states(idx[:, 4:7], kv_cache=cache))  # several tokens at once
    steps = [model.lm_head(model.hidden_states(idx[:, t:t + 1], kv_cache=cache)) for t in range(7, 10)]
    torch.testing.assert_close(torch.cat([first, middle, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_generate_sampling_options():
    model = make(seed=5).train()
    prompt = torch.randint(V, (3, 4))
    greedy = model.generate(prompt, 5, temperature=0.0)
    assert model.training  # the caller's mode is restored
    assert torch.equal(model.generate(prompt, 5, top_k=1), greedy)  # top-1 sampling is greedy
    a = model.generate(prompt, 8, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < V


def test_generate_refuses_a_bidirectional_model():
    with pytest.raises(ValueError, match="causal"):
        make(False).generate(torch.zeros(1, 2, dtype=torch.long), 3)
