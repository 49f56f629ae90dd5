"""Objectives: clm/mlm/mntp batches, BERT masking (properties and statistics), word masking, metrics."""

from __future__ import annotations

import math
import random
import re
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptexp.objectives import (
    IGNORE_INDEX, KEEP_SHARE, MASK_SHARE, RANDOM_SHARE, Batch, TokenInfo, Window, is_causal,
    make_batch, mask_tokens, metric_sums, metrics_from_sums, word_index,
)
from gptexp.spec import ClmSpec, MlmSpec, MntpSpec

PAD, UNK, BOS, EOS, MASK = range(5)
INFO = TokenInfo(vocab_size=50, special_ids=(PAD, UNK, BOS, EOS, MASK), mask_id=MASK, pad_id=PAD)
SPECIALS = torch.tensor(INFO.special_ids)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_window(B: int, T: int, seed: int = 0, special_share: float = 0.0) -> Window:
    g = gen(seed)
    ids = torch.randint(5, INFO.vocab_size, (B, T + 1), generator=g)
    specials = torch.rand(B, T + 1, generator=g) < special_share
    ids = torch.where(specials, torch.randint(0, 4, (B, T + 1), generator=g), ids)  # never <mask> in text
    return Window(ids=ids, byte_counts=torch.randint(1, 4, (B, T + 1), generator=g),
                  word_starts=torch.rand(B, T + 1, generator=g) < 0.3)


def test_is_causal():
    assert is_causal(ClmSpec()) and not is_causal(MlmSpec()) and not is_causal(MntpSpec())


def test_clm_shifts_by_one():
    window = random_window(2, 6)
    window.ids[1, 3] = PAD
    batch = make_batch(ClmSpec(), window, INFO, gen())
    assert torch.equal(batch.inputs, window.ids[:, :-1])
    expected = window.ids[:, 1:].clone()
    expected[1, 2] = IGNORE_INDEX  # a pad target is not predicted
    assert torch.equal(batch.labels, expected)
    expected_bytes = window.byte_counts[:, 1:].clone()
    expected_bytes[1, 2] = 0
    assert torch.equal(batch.label_bytes, expected_bytes)


def test_mlm_labels_are_the_original_tokens_at_chosen_positions():
    window = random_window(4, 32, special_share=0.1)
    original = window.ids.clone()
    batch = make_batch(MlmSpec(mask_prob=0.3), window, INFO, gen(1))
    assert torch.equal(window.ids, original)  # the window is untouched
    ids = window.ids[:, :32]
    predicted = batch.labels != IGNORE_INDEX
    assert predicted.any()
    assert torch.equal(batch.labels[predicted], ids[predicted])
    assert torch.equal(batch.inputs[~predicted], ids[~predicted])  # only predicted positions change
    assert not torch.isin(ids[predicted], SPECIALS).any()
    assert torch.equal(batch.label_bytes, torch.where(predicted, window.byte_counts[:, :32], 0))


# ---------------------------------------------------------------------------------------------
# properties of mask_tokens, for any ids, maskable positions, probabilities and seeds


@st.composite
def masking_case(draw):
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**31 - 1))
    g = gen(seed)
    ids = torch.randint(0, INFO.vocab_size, (B, T), generator=g)
    maskable = torch.rand(B, T, generator=g) < draw(st.floats(0.0, 1.0))
    word_starts = torch.rand(B, T, generator=g) < 0.4 if draw(st.booleans()) else None
    return ids, maskable, draw(st.floats(0.01, 0.99)), seed, word_starts


@settings(max_examples=150, deadline=None)
@given(masking_case())
def test_masking_properties(case):
    ids, maskable, mask_prob, seed, word_starts = case
    ids_before, maskable_before = ids.clone(), maskable.clone()
    new_ids, chosen = mask_tokens(ids, maskable, INFO, mask_prob, gen(seed), word_starts)
    assert torch.equal(ids, ids_before) and torch.equal(maskable, maskable_before)  # pure
    allowed = maskable & ~torch.isin(ids, SPECIALS)
    assert not (chosen & ~allowed).any()  # never a special id, never outside maskable
    assert torch.equal(new_ids[~chosen], ids[~chosen])  # unchosen inputs unchanged
    replaced = new_ids[chosen]
    assert not torch.isin(replaced[replaced != MASK], SPECIALS).any()  # random ids are non-special
    assert chosen.any() == allowed.any()  # at least one position whenever one can be chosen
    again = mask_tokens(ids, maskable, INFO, mask_prob, gen(seed), word_starts)
    assert torch.equal(again[0], new_ids) and torch.equal(again[1], chosen)  # same seed, same result
    if word_starts is not None:  # a word is chosen whole: its allowed tokens all or none
        words = word_index(word_starts)
        for word in words.unique():
            in_word = (words == word) & allowed
            assert chosen[in_word].all() or not chosen[in_word].any()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 24), st.integers(0, 2**31 - 1), st.sampled_from(["mlm", "mntp"]),
       st.sampled_from(["token", "word"]))
def test_make_batch_properties(B, T, seed, kind, unit):
    spec = (MlmSpec if kind == "mlm" else MntpSpec)(mask_prob=0.2, mask_unit=unit)
    window = random_window(B, T, seed, special_share=0.2)
    original = window.ids.clone()
    batch = make_batch(spec, window, INFO, gen(seed))
    assert torch.equal(window.ids, original)
    assert batch.inputs.shape == batch.labels.shape == batch.label_bytes.shape == (B, T)
    ids = window.ids[:, :T]
    shift = 1 if kind == "mntp" else 0  # mntp: the label at j is about token j + 1
    predicted = batch.labels != IGNORE_INDEX
    targets_at = torch.zeros_like(predicted)
    targets_at[:, shift:] = predicted[:, : T - shift]  # which input positions are predicted
    assert torch.equal(batch.labels[predicted], ids[targets_at])
    assert torch.equal(batch.inputs[~targets_at], ids[~targets_at])
    assert (batch.label_bytes[~predicted] == 0).all()


def test_mntp_is_mlm_shifted_left_by_one():
    window = random_window(8, 64, seed=3)
    mlm = make_batch(MlmSpec(mask_prob=0.15), window, INFO, gen(5))
    mntp = make_batch(MntpSpec(mask_prob=0.15), window, INFO, gen(5))
    # same draws: the same tokens are masked, except token 0, which mntp never chooses
    assert torch.equal(mntp.inputs[:, 1:], mlm.inputs[:, 1:])
    assert torch.equal(mntp.inputs[:, 0], window.ids[:, 0])
    assert torch.equal(mntp.labels[:, :-1], mlm.labels[:, 1:])  # the label of token i sits at i - 1
    assert torch.equal(mntp.label_bytes[:, :-1], mlm.label_bytes[:, 1:])
    assert (mntp.labels[:, -1] == IGNORE_INDEX).all()  # the last position has no next input token
    assert (mntp.labels != IGNORE_INDEX).sum() > 0


def test_at_least_one_position_is_chosen():
    ids = torch.randint(5, 50, (1, 8))
    new_ids, chosen = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), INFO, 1e-9, gen())
    assert chosen.sum() == 1
    only_specials = torch.full((2, 4), EOS)
    new_ids, chosen = mask_tokens(only_specials, torch.ones(2, 4, dtype=torch.bool), INFO, 0.5, gen())
    assert not chosen.any() and torch.equal(new_ids, only_specials)


def test_masking_needs_a_mask_token():
    no_mask = TokenInfo(vocab_size=10, special_ids=(0,), mask_id=None, pad_id=0)
    with pytest.raises(ValueError, match="mask"):
        mask_tokens(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool), no_mask, 0.15, gen())


# ---------------------------------------------------------------------------------------------
# statistics: shares within 5 binomial standard deviations


def assert_share(successes: int, trials: int, p: float) -> None:
    sigma = math.sqrt(trials * p * (1 - p))
    assert abs(successes - trials * p) < 5 * sigma, (successes, trials * p, sigma)


def test_token_masking_statistics():
    B, T, mask_prob = 256, 512, 0.15  # 131k positions
    info = TokenInfo(vocab_size=1000, special_ids=(0, 1, 2, 3, 4), mask_id=4, pad_id=0)
    ids = torch.randint(0, 1000, (B, T), generator=gen(11))
    maskable = ~torch.isin(ids, torch.tensor(info.special_ids))
    new_ids, chosen = mask_tokens(ids, maskable, info, mask_prob, gen(12))
    n_maskable, n_chosen = int(maskable.sum()), int(chosen.sum())
    assert n_maskable > 100_000
    assert_share(n_chosen, n_maskable, mask_prob)
    n_candidates = 1000 - 5  # a random replacement equals the original with chance 1 / n_candidates
    before, after = ids[chosen], new_ids[chosen]
    assert_share(int((after == info.mask_id).sum()), n_chosen, MASK_SHARE)
    assert_share(int((after == before).sum()), n_chosen, KEEP_SHARE + RANDOM_SHARE / n_candidates)
    random_replaced = (after != before) & (after != info.mask_id)
    assert_share(int(random_replaced.sum()), n_chosen, RANDOM_SHARE * (1 - 1 / n_candidates))
    assert not torch.isin(after[random_replaced], torch.tensor(info.special_ids)).any()
    # the replacements spread over the whole non-special vocabulary
    assert len(after[random_replaced].unique()) > 0.8 * n_candidates


def test_word_masking_statistics():
    B, T, mask_prob = 128, 1024, 0.15
    ids = torch.randint(5, 50, (B, T), generator=gen(21))
    word_starts = torch.rand(B, T, generator=gen(22)) < 0.25  # ~33k words, ~4 tokens each
    new_ids, chosen = mask_tokens(ids, torch.ones_like(word_starts), INFO, mask_prob, gen(23), word_starts)
    words = word_index(word_starts)
    n_words = int(words.max()) + 1
    chosen_words = torch.zeros(n_words, dtype=torch.bool)
    chosen_words[words[chosen]] = True
    assert_share(int(chosen_words.sum()), n_words, mask_prob)
    masked_words = torch.zeros(n_words, dtype=torch.bool)
    masked_words[words[new_ids == MASK]] = True  # the 80/10/10 decision is one per word
    assert_share(int(masked_words.sum()), int(chosen_words.sum()), MASK_SHARE)
    assert torch.equal(chosen, chosen_words[words])  # every token of a chosen word is chosen


# ---------------------------------------------------------------------------------------------
# word masking hides the same characters whatever the tokenization

WORD = re.compile(r" ?[a-z]+| ?[0-9]+| ?[^\sa-z0-9]+|\s+")  # a small stand-in for the gpt4 split


def tokenize(texts: list[str], cut_seed: int | None) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Char tokens (cut_seed None) or BPE-like multi-character pieces cut inside each word.

    Returns right-padded ids and word_starts (B, T) and each row's token lengths in characters.
    """
    cuts = random.Random(cut_seed)
    rows = []
    for text in texts:
        pieces = []  # (piece, starts a word)
        for word in WORD.findall(text):
            if cut_seed is None:
                ends = list(range(1, len(word) + 1))
            else:
                ends = sorted(set(cuts.sample(range(1, len(word)), k=cuts.randint(0, len(word) - 1))) | {len(word)})
            starts = [0, *ends[:-1]]
            pieces += [(word[a:b], a == 0) for a, b in zip(starts, ends)]
        assert "".join(p for p, _ in pieces) == text
        rows.append(pieces)
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD)
    word_starts = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, pieces in enumerate(rows):
        for t, (piece, starts_word) in enumerate(pieces):
            ids[b, t] = 5 + zlib.crc32(piece.encode()) % 45
            word_starts[b, t] = starts_word
    return ids, word_starts, [[len(p) for p, _ in r] for r in rows]


def hidden_characters(positions: torch.Tensor, lengths: list[list[int]]) -> set[tuple[int, int]]:
    """(row, character offset) of every character inside a True position."""
    hidden = set()
    for b, row in enumerate(lengths):
        offset = 0
        for t, n in enumerate(row):
            if positions[b, t]:
                hidden |= {(b, offset + i) for i in range(n)}
            offset += n
    return hidden


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(alphabet="abc xy,.9\n", min_size=1, max_size=60), min_size=1, max_size=3),
       st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_word_masking_hides_the_same_characters_for_char_and_bpe(texts, seed, cut_seed, mask_prob):
    char_ids, char_starts, char_lengths = tokenize(texts, None)
    bpe_ids, bpe_starts, bpe_lengths = tokenize(texts, cut_seed)
    char_new, char_chosen = mask_tokens(char_ids, char_ids != PAD, INFO, mask_prob, gen(seed), char_starts)
    bpe_new, bpe_chosen = mask_tokens(bpe_ids, bpe_ids != PAD, INFO, mask_prob, gen(seed), bpe_starts)
    assert hidden_characters(char_chosen, char_lengths) == hidden_characters(bpe_chosen, bpe_lengths)
    # and the same characters become <mask> (the 80/10/10 decision is per word)
    assert hidden_characters(char_new == MASK, char_lengths) == hidden_characters(bpe_new == MASK, bpe_lengths)


def test_word_index_example():
    starts = torch.tensor([[True, False, True], [False, True, False]])
    assert word_index(starts).tolist() == [[0, 0, 1], [2, 3, 3]]


# ---------------------------------------------------------------------------------------------
# metrics


def test_bits_per_byte_on_a_hand_computed_example():
    # probabilities 1/2, 1/4, 1/8, 1/8 at every position
    logits = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125])).expand(1, 3, 4)
    labels = torch.tensor([[1, 0, IGNORE_INDEX]])  # -ln(1/4) = 2 ln 2 nats, -ln(1/2) = ln 2
    label_bytes = torch.tensor([[4, 2, 0]])  # 6 bytes: 3 bits over 6 bytes
    sums = metric_sums(logits, labels, label_bytes)
    assert sums.dtype == torch.float64
    torch.testing.assert_close(sums, torch.tensor([3 * math.log(2), 1.0, 2.0, 6.0], dtype=torch.float64))
    metrics = metrics_from_sums(sums)
    assert metrics["val/loss"] == pytest.approx(1.5 * math.log(2))
    assert metrics["val/bpb"] == pytest.approx(0.5)
    assert metrics["val/acc"] == pytest.approx(0.5)  # argmax is token 0: right once out of two


def test_metric_sums_add_across_batches():
    g = gen(7)
    logits, labels = torch.randn(4, 6, 9, generator=g), torch.randint(0, 9, (4, 6), generator=g)
    labels[0, :3] = IGNORE_INDEX
    label_bytes = torch.randint(1, 5, (4, 6), generator=g)
    whole = metric_sums(logits, labels, label_bytes)
    halves = metric_sums(logits[:2], labels[:2], label_bytes[:2]) + metric_sums(logits[2:], labels[2:], label_bytes[2:])
    torch.testing.assert_close(whole, halves)
    assert whole[3] == label_bytes[labels != IGNORE_INDEX].sum()  # bytes of ignored labels do not count
    assert math.isnan(metrics_from_sums(torch.zeros(4, dtype=torch.float64))["val/loss"])


def test_batch_fields():
    assert [f for f in Batch.__dataclass_fields__] == ["inputs", "labels", "label_bytes"]


# ---------------------------------------------------------------------------------------------
# word_tail masking and words cut by the window's edges


@settings(max_examples=150, deadline=None)
@given(masking_case(), st.booleans())
def test_word_tail_hides_a_tail_and_never_reveals_it(case, all_maskable):
    ids, maskable, mask_prob, seed, word_starts = case
    if word_starts is None:
        word_starts = torch.rand(ids.shape, generator=gen(seed + 1)) < 0.4
    ids = ids.clamp(min=5)  # no specials: every word lies wholly in maskable positions
    if all_maskable:
        maskable = torch.ones_like(maskable)
    new_ids, chosen = mask_tokens(ids, maskable, INFO, mask_prob, gen(seed), word_starts, word_tail=True)
    assert torch.equal(new_ids[chosen], torch.full_like(new_ids[chosen], MASK))  # the tail is <mask>, always
    assert torch.equal(new_ids[~chosen], ids[~chosen])  # the visible prefix (and the rest) unchanged
    again = mask_tokens(ids, maskable, INFO, mask_prob, gen(seed), word_starts, word_tail=True)
    assert torch.equal(again[1], chosen)
    words = word_index(word_starts)
    for word in words.unique():
        in_word = (words == word).flatten()
        hidden = chosen.flatten()[in_word]
        if hidden.any() and maskable.flatten()[in_word].all():  # chosen positions of a word are a suffix of it: once hidden, hidden to its end
            first = int(hidden.int().argmax())
            assert hidden[first:].all() and not hidden[:first].any()
    if all_maskable:
        assert chosen.any()


def test_word_tail_prefix_length_is_uniform():
    """A chosen word of L tokens keeps k visible, k uniform in {0..L-1}: word length 4 -> k ~ U{0..3}."""
    B, T = 200, 64
    word_starts = (torch.arange(T) % 4 == 0).expand(B, T)
    ids = torch.randint(5, 50, (B, T), generator=gen(3))
    _, chosen = mask_tokens(ids, torch.ones(B, T, dtype=torch.bool), INFO, 0.3, gen(4), word_starts, word_tail=True)
    hidden_per_word = chosen.view(B, T // 4, 4).sum(-1)
    counts = torch.bincount(hidden_per_word.flatten(), minlength=5)  # 0 = not chosen, 1..4 tail lengths
    tails = counts[1:].double()
    assert counts[1:].sum() > 500
    assert (tails / tails.sum() - 0.25).abs().max() < 0.05


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 4), st.integers(2, 24), st.integers(0, 2**31 - 1), st.sampled_from(["word", "word_tail"]))
def test_word_masks_never_hide_a_fragment_cut_by_the_window(B, T, seed, unit):
    window = random_window(B, T, seed)
    batch = make_batch(MlmSpec(mask_prob=0.5, mask_unit=unit), window, INFO, gen(seed))
    chosen = batch.labels != IGNORE_INDEX
    starts = window.word_starts
    for b in range(B):
        marks = starts[b].tolist()
        first = marks.index(True) if True in marks[:T] else T
        last = max((t for t in range(T) if marks[t]), default=-1)
        assert not chosen[b, :first].any()  # the window began inside this word
        if not marks[T]:
            assert last < 0 or not chosen[b, last:].any()  # the window ends inside this word


def test_window_starting_mid_word_masks_only_whole_words():
    # tokens 0-1 end a word begun before the window; 2-4 and 5-6 are words; 7 begins one that goes on
    ids = torch.arange(10, 19).view(1, 9)
    word_starts = torch.tensor([[False, False, True, False, False, True, False, True, False]])
    window = Window(ids=ids, byte_counts=torch.ones_like(ids), word_starts=word_starts)
    seen = torch.zeros(8, dtype=torch.bool)
    for seed in range(40):
        batch = make_batch(MlmSpec(mask_prob=0.5, mask_unit="word"), window, INFO, gen(seed))
        seen |= (batch.labels != IGNORE_INDEX)[0]
    assert seen.tolist() == [False, False, True, True, True, True, True, False]
