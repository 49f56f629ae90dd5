"""The frozen evaluation set: word-aligned spans, hidden words as byte ranges, the same bytes in every arm."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptexp.evalset import EvalSet, EvalSetError, arm_view, build_evalset, text_words
from gptexp.tokenizers import train_tokenizer

ALPHABET = "abcdeé€😀xyzñ ,.\n'"


def hidden_bytes_of(view, text: bytes, tokenizer) -> list[bytes]:
    """The bytes an arm hides: the decoded bytes of each hidden word's tokens."""
    return [b"".join(tokenizer.token_bytes(i) for i in span.ids[first:last]) for span in view for first, last in span.words]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, min_size=20, max_size=300), st.text(alphabet=ALPHABET + "ü", min_size=1, max_size=200),
       st.integers(0, 2**32 - 1), st.integers(8, 40))
def test_char_and_bpe_arms_hide_exactly_the_same_bytes(train_text, eval_text, seed, char_window):
    char = train_tokenizer(train_text, kind="char", pattern="gpt4")
    bpe = train_tokenizer(train_text, kind="bpe", vocab_size=300, pattern="gpt4")
    evalset = build_evalset(eval_text, "gpt4", [(char, char_window), (bpe, max(4, char_window // 3))], seed, 0.15, reference=bpe)
    raw = eval_text.encode("utf-8")
    stored = [raw[a:b] for span in evalset.spans for a, b in span.hidden]
    char_view, bpe_view = arm_view(evalset, eval_text, char), arm_view(evalset, eval_text, bpe)
    assert hidden_bytes_of(char_view, raw, char) == stored == hidden_bytes_of(bpe_view, raw, bpe)
    for span, cv, bv in zip(evalset.spans, char_view, bpe_view):
        assert len(cv.ids) <= char_window and len(bv.ids) <= max(4, char_window // 3)  # fits both windows
        assert b"".join(char.token_bytes(i) for i in cv.ids) == raw[span.start : span.end] or char.special_tokens["<unk>"] in cv.ids
        assert b"".join(bpe.token_bytes(i) for i in bv.ids) == raw[span.start : span.end]
    # a hidden word never holds a character the char arm cannot encode (it is skipped in every arm)
    unk = char.special_tokens["<unk>"]
    assert all(unk not in span.ids[a:b] for span in char_view for a, b in span.words)
    words = {(w.start, w.end) for w in text_words(eval_text, "gpt4")}
    assert all(h in words for span in evalset.spans for h in span.hidden)  # whole words only


def test_spans_tile_the_text_and_every_span_hides_a_word():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    char = train_tokenizer(text, kind="char")
    evalset = build_evalset(text, "gpt4", [(char, 64)], seed=7, hidden_fraction=0.15)
    raw = text.encode()
    assert evalset.spans[0].start == 0 and evalset.spans[-1].end == len(raw)
    assert all(a.end == b.start for a, b in zip(evalset.spans, evalset.spans[1:]))
    assert all(span.hidden for span in evalset.spans)
    share = evalset.hidden_words / len([w for w in text_words(text, "gpt4") if w.text.strip()])
    assert 0.12 < share < 0.25  # ~15%, plus the one forced per span


def test_unknown_characters_are_skipped_in_every_arm_and_counted():
    train = "abc abc abc " * 20
    text = "abc " * 30 + "zzz " * 30
    char = train_tokenizer(train, kind="char")
    evalset = build_evalset(text, "gpt4", [(char, 40)], seed=1, hidden_fraction=0.5)
    raw = text.encode()
    assert evalset.skipped_words > 0
    assert all(raw[a:b] == b" abc" or raw[a:b] == b"abc" for span in evalset.spans for a, b in span.hidden)


def test_round_trip_and_wrong_text(tmp_path):
    text = "one two three four five six seven eight nine ten " * 5
    char = train_tokenizer(text, kind="char")
    evalset = build_evalset(text, "gpt4", [(char, 30)], seed=3)
    path = tmp_path / "evalset.json"
    evalset.save(path)
    again = EvalSet.load(path, text)
    assert again.to_dict() == evalset.to_dict()
    with pytest.raises(EvalSetError, match="another text"):
        EvalSet.load(path, text + "x")
    path.write_text("{}")
    with pytest.raises(EvalSetError):
        EvalSet.load(path)


def test_the_same_seed_draws_the_same_words():
    text = "alpha beta gamma delta " * 30
    char = train_tokenizer(text, kind="char")
    a = build_evalset(text, "gpt4", [(char, 50)], seed=11)
    b = build_evalset(text, "gpt4", [(char, 50)], seed=11)
    c = build_evalset(text, "gpt4", [(char, 50)], seed=12)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
