"""Scoring: the batched PLL metrics equal a brute-force scorer (one forward per scored unit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gptexp.evalset import SpanTokens, arm_view, build_evalset
from gptexp.models import build_model
from gptexp.scoring import SCORINGS, score_spans, span_rows, summarize
from gptexp.spec import GPTSpec
from gptexp.tokenizers import train_tokenizer

TEXT = ("Wherefore art thou Romeo? Deny thy father and refuse thy name; or if thou wilt not, "
        "be but sworn my love, and I'll no longer be a Capulet. Ça coûte 5€ 😀. ") * 3


def tiny_model(vocab_size: int, block: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(GPTSpec(n_layer=2, n_head=2, n_embd=16, block_size=block, positions="rope"), vocab_size, causal=False)
    return model.eval()


def token_bits(model, ids: list[int], masked: list[int], position: int, mask_id: int) -> tuple[float, bool]:
    inputs = torch.tensor([ids])
    inputs[0, masked] = mask_id
    with torch.no_grad():
        logits, _ = model(inputs)
    logit = logits[0, position]
    nats = F.cross_entropy(logit[None], torch.tensor([ids[position]])).item()
    return nats / math.log(2), bool(logit.argmax() == ids[position])


def brute_force(model, span: SpanTokens, mask_id: int) -> dict[str, list[tuple[float, bool]]]:
    """Per hidden word and scoring: (bits, exact), each scored token its own forward pass."""
    out: dict[str, list[tuple[float, bool]]] = {s: [] for s in SCORINGS}
    every = [p for a, b in span.words for p in range(a, b)]
    for w, (first, last) in enumerate(span.words):
        others = [p for p in every if not first <= p < last]
        results = {
            "masked": [token_bits(model, span.ids, every, p, mask_id) for p in range(first, last)],
            "pll": [token_bits(model, span.ids, list(range(first, last)), p, mask_id) for p in range(first, last)],
            "hw_l2r": [token_bits(model, span.ids, others + list(range(p, last)), p, mask_id) for p in range(first, last)],
            "pll_l2r": [token_bits(model, span.ids, list(range(p, last)), p, mask_id) for p in range(first, last)],
        }
        for s, tokens in results.items():
            out[s].append((sum(b for b, _ in tokens), all(hit for _, hit in tokens)))
    return out


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_batched_scores_equal_brute_force(kind):
    tokenizer = train_tokenizer(TEXT, kind=kind, vocab_size=300, pattern="gpt4")
    block = 48 if kind == "char" else 20
    evalset = build_evalset(TEXT, "gpt4", [(tokenizer, block)], seed=5, hidden_fraction=0.3)
    spans = arm_view(evalset, TEXT, tokenizer)[:4]
    mask_id = tokenizer.special_tokens["<mask>"]
    model = tiny_model(tokenizer.vocab_size, block)
    scores = score_spans(model, spans, mask_id, max_rows=7)  # small chunks: the split path is used too
    expected: dict[str, list[tuple[float, bool]]] = {s: [] for s in SCORINGS}
    for span in spans:
        for s, words in brute_force(model, span, mask_id).items():
            expected[s] += words
    for s in SCORINGS:
        assert np.allclose(scores.bits[s], [b for b, _ in expected[s]], rtol=1e-4, atol=1e-4), s
        assert scores.exact[s] == [e for _, e in expected[s]], s
    word_bytes = np.array(scores.word_bytes)
    metrics = summarize(scores)
    assert metrics["val/pll_l2r_bpb"] == pytest.approx(sum(b for b, _ in expected["pll_l2r"]) / word_bytes.sum(), rel=1e-6)
    assert metrics["val/hidden_bytes"] == word_bytes.sum()


def test_one_token_words_score_the_same_under_pll_and_pll_l2r():
    """A one-token word has no prefix: pll and pll_l2r are the same prediction."""
    tokenizer = train_tokenizer(TEXT, kind="bpe", vocab_size=290, pattern="gpt4")
    evalset = build_evalset(TEXT, "gpt4", [(tokenizer, 24)], seed=2, hidden_fraction=0.3, reference=tokenizer)
    spans = arm_view(evalset, TEXT, tokenizer)
    scores = score_spans(tiny_model(tokenizer.vocab_size, 24), spans, tokenizer.special_tokens["<mask>"])
    reference = [n for span in evalset.spans for n in span.reference_tokens]
    one = np.array(reference) == 1
    assert one.any() and (~one).any()
    assert np.allclose(np.array(scores.bits["pll"])[one], np.array(scores.bits["pll_l2r"])[one], atol=1e-5)
    metrics = summarize(scores, reference)
    assert metrics["val/pll_bpb/one_token"] == pytest.approx(metrics["val/pll_l2r_bpb/one_token"], rel=1e-5)


def test_rows_of_a_span():
    span = SpanTokens(ids=list(range(10, 20)), token_bytes=[1] * 10, words=[(2, 4), (6, 7)], word_bytes=[2, 1])
    rows = span_rows(span, SCORINGS)
    assert len(rows) == 1 + 2 + 2 * 3  # masked + pll per word + (hw_l2r, pll_l2r) per hidden token
    pll_l2r = [r for r in rows if r.scored and r.scored[0][2] == "pll_l2r"]
    assert [(r.masked, r.scored[0][0]) for r in pll_l2r] == [([2, 3], 2), ([3], 3), ([6], 6)]
    hw = [r for r in rows if r.scored and r.scored[0][2] == "hw_l2r"]
    assert [(sorted(r.masked), r.scored[0][0]) for r in hw] == [([2, 3, 6], 2), ([3, 6], 3), ([2, 3, 6], 6)]
