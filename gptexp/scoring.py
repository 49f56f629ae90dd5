"""Score a masked LM on a frozen evaluation set: four ways to price the hidden words, in bits.

For every span of the set (word-aligned text that fits the window) and every hidden word w of
L tokens, with 100% <mask> (no 80/10/10 at evaluation):

  masked   all hidden words of the span are masked at once; each token of w is predicted
           independently (today's MLM metric, cleaned up)                       -> val/bpb
  hw_l2r   the same, but w is scored by the chain rule: token j is predicted with tokens < j of
           w visible, the rest of w and every other hidden word masked          -> val/hw_l2r_bpb
  pll      only w is masked; its tokens are predicted independently            -> val/pll_bpb
  pll_l2r  only w is masked, chain rule inside w (PLL-word-l2r, Kauf & Ivanova 2023): token j
           is predicted with tokens < j of w visible; the headline metric      -> val/pll_l2r_bpb

bpb = summed bits of the hidden words / their UTF-8 bytes. A word is an exact match when every
scored token is the argmax (for l2r: greedy decoding of w, given its true prefix, gives w).

Cost, stated: one forward pass per span (split into chunks of at most max_rows rows); its rows
are every masked variant the metrics need: 1 (masked) + n (pll) + 2 x sum of L (hw_l2r, pll_l2r)
for n hidden words of L tokens. With 15% of words hidden, a 128-character span of a char arm has
about 3 hidden words of 5 characters: about 34 rows of 128 tokens, so scoring all four metrics
costs about 34 forward passes over the text; BPE (one or two tokens a word) about 10 rows of 40.
A brute-force scorer (one forward per scored unit) does the same arithmetic in ~30x more calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gptexp import contract as C
from gptexp.evalset import SpanTokens

SCORINGS = ("masked", "hw_l2r", "pll", "pll_l2r")
METRIC_PREFIX = {"masked": C.VAL_BPB, "hw_l2r": "val/hw_l2r_bpb", "pll": "val/pll_bpb", "pll_l2r": "val/pll_l2r_bpb"}
LOSS_NAME = {"masked": C.VAL_LOSS, "hw_l2r": "val/hw_l2r_loss", "pll": "val/pll_loss", "pll_l2r": "val/pll_l2r_loss"}
EXACT_NAME = {"masked": "val/exact", "hw_l2r": "val/hw_l2r_exact", "pll": "val/pll_exact", "pll_l2r": "val/pll_l2r_exact"}
# `gptexp eval --metric` names a family; pll_l2r also needs nothing more than its own rows.
METRIC_CHOICES = {"masked": ("masked", "hw_l2r"), "pll": ("pll",), "pll_l2r": ("pll_l2r",)}
POSITION_BUCKETS = 8  # bits by byte position inside a word: 0..6 and "7+"
LN2 = math.log(2)


@dataclass
class Row:
    """One masked variant of a span: which positions are <mask>, and which are scored."""

    masked: list[int]
    scored: list[tuple[int, int, str]]  # (position, hidden word index, scoring)


def span_rows(span: SpanTokens, scorings: Iterable[str]) -> list[Row]:
    """Every masked variant of one span that the requested scorings need."""
    scorings = set(scorings)
    words = span.words
    all_hidden = [p for first, last in words for p in range(first, last)]
    rows: list[Row] = []
    if "masked" in scorings:
        rows.append(Row(all_hidden, [(p, w, "masked") for w, (first, last) in enumerate(words) for p in range(first, last)]))
    for w, (first, last) in enumerate(words):
        others = [p for v, (a, b) in enumerate(words) if v != w for p in range(a, b)]
        if "pll" in scorings:
            rows.append(Row(list(range(first, last)), [(p, w, "pll") for p in range(first, last)]))
        for p in range(first, last):  # token p of w given the tokens of w before it
            if "hw_l2r" in scorings:
                rows.append(Row(others + list(range(p, last)), [(p, w, "hw_l2r")]))
            if "pll_l2r" in scorings:
                rows.append(Row(list(range(p, last)), [(p, w, "pll_l2r")]))
    return rows


@dataclass
class WordScores:
    """Per hidden word, per scoring: bits, exact match; per token: bits by byte position."""

    bits: dict[str, list[float]] = field(default_factory=dict)
    exact: dict[str, list[bool]] = field(default_factory=dict)
    word_bytes: list[int] = field(default_factory=list)
    word_tokens: list[int] = field(default_factory=list)  # this arm's tokens per hidden word
    position_bits: dict[str, np.ndarray] = field(default_factory=dict)  # (POSITION_BUCKETS,) bits
    position_bytes: np.ndarray = field(default_factory=lambda: np.zeros(POSITION_BUCKETS))


@torch.no_grad()
def score_spans(model: nn.Module, spans: list[SpanTokens], mask_id: int, scorings: Iterable[str] = SCORINGS,
                device: torch.device | str = "cpu", max_rows: int = 512) -> WordScores:
    """Bits of every hidden word under every scoring; one forward per span (split past max_rows)."""
    scorings = tuple(s for s in SCORINGS if s in set(scorings))
    result = WordScores(bits={s: [] for s in scorings}, exact={s: [] for s in scorings},
                        position_bits={s: np.zeros(POSITION_BUCKETS) for s in scorings})
    for span in spans:
        n_words = len(span.words)
        if not n_words:
            continue
        base = torch.tensor(span.ids, dtype=torch.long)
        bits = {s: np.zeros(n_words) for s in scorings}
        exact = {s: np.ones(n_words, dtype=bool) for s in scorings}
        offsets = np.concatenate([[0], np.cumsum(span.token_bytes)])
        rows = span_rows(span, scorings)
        for chunk_start in range(0, len(rows), max_rows):
            chunk = rows[chunk_start : chunk_start + max_rows]
            inputs = base.repeat(len(chunk), 1)
            row_of, pos_of = [], []
            for r, row in enumerate(chunk):
                inputs[r, row.masked] = mask_id
                for p, _, _ in row.scored:
                    row_of.append(r)
                    pos_of.append(p)
            logits, _ = model(inputs.to(device))
            picked = logits[torch.tensor(row_of), torch.tensor(pos_of)].float().cpu()  # (N, V)
            targets = base[torch.tensor(pos_of)]
            nats = F.cross_entropy(picked, targets, reduction="none").double().numpy()
            hits = (picked.argmax(-1) == targets).numpy()
            k = 0
            for row in chunk:
                for p, w, s in row.scored:
                    token_bits = nats[k] / LN2
                    bits[s][w] += token_bits
                    exact[s][w] &= bool(hits[k])
                    first = span.words[w][0]
                    _spread(result.position_bits[s], offsets[p] - offsets[first], span.token_bytes[p], token_bits)
                    k += 1
        for s in scorings:
            result.bits[s] += bits[s].tolist()
            result.exact[s] += exact[s].tolist()
        for w, (first, last) in enumerate(span.words):
            for p in range(first, last):
                _spread(result.position_bytes, offsets[p] - offsets[first], span.token_bytes[p], None)
        result.word_bytes += span.word_bytes
        result.word_tokens += [last - first for first, last in span.words]
    return result


def _spread(buckets: np.ndarray, byte_offset: int, n_bytes: int, token_bits: float | None) -> None:
    """Share a token's bits (or count its bytes, when bits is None) evenly over its byte positions."""
    for b in range(int(n_bytes)):
        bucket = min(int(byte_offset) + b, POSITION_BUCKETS - 1)
        buckets[bucket] += 1.0 if token_bits is None else token_bits / n_bytes


def summarize(scores: WordScores, reference_tokens: list[int] | None = None, prefix: str = "val/") -> dict[str, float]:
    """The metrics of one run: bpb, nats per token and exact match per scoring, bits by byte
    position, one-token / multi-token words (by the reference tokenizer's count)."""
    word_bytes = np.asarray(scores.word_bytes, dtype=np.float64)
    total_bytes = word_bytes.sum()
    out: dict[str, float] = {f"{prefix}hidden_words": float(len(word_bytes)), f"{prefix}hidden_bytes": float(total_bytes)}
    groups = {}
    if reference_tokens is not None and len(reference_tokens) == len(word_bytes):
        counts = np.asarray(reference_tokens)
        groups = {"one_token": counts == 1, "multi_token": counts > 1}
        out[f"{prefix}one_token_share"] = float((counts == 1).mean()) if len(counts) else math.nan
    for s, word_bits in scores.bits.items():
        bits = np.asarray(word_bits)
        name = rename(METRIC_PREFIX[s], prefix)
        out[name] = float(bits.sum() / total_bytes) if total_bytes else math.nan
        out[rename(EXACT_NAME[s], prefix)] = float(np.mean(scores.exact[s])) if len(bits) else math.nan
        n_tokens = float(np.sum(scores.word_tokens))  # nats per hidden token: the per-token loss
        out[rename(LOSS_NAME[s], prefix)] = float(bits.sum() * LN2 / n_tokens) if n_tokens else math.nan
        for group, member in groups.items():
            denominator = word_bytes[member].sum()
            out[f"{name}/{group}"] = float(bits[member].sum() / denominator) if denominator else math.nan
        for bucket in range(POSITION_BUCKETS):
            n = scores.position_bytes[bucket]
            label = f"{bucket}+" if bucket == POSITION_BUCKETS - 1 else str(bucket)
            out[f"{name}/byte{label}"] = float(scores.position_bits[s][bucket] / n) if n else math.nan
    return out


def rename(metric: str, prefix: str) -> str:
    """val/bpb under another prefix: rename("val/bpb", "test/") -> "test/bpb"."""
    return prefix + metric.removeprefix("val/")
