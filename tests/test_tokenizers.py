"""Tests of gptexp.tokenizers: char and byte-level BPE, the file format, training
against a naive reference trainer, encoding against tiktoken, and properties."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptexp.tokenizers import (
    DEFAULT_SPECIAL_TOKENS,
    SPLIT_PATTERNS,
    EncodedText,
    Tokenizer,
    TokenizerFileError,
    load_tokenizer,
    train_tokenizer,
)
from gptexp.tokenizers.base import canonical_json, split_chunks
from gptexp.tokenizers.bpe import BPETokenizer, flatten_chunks, learn_merges, merge_pair, pair_counts

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "tinyshakespeare.txt"
PATTERNS = ["gpt2", "gpt4", "none"]

# strings that have broken tokenizers before: multi-byte UTF-8, combining marks,
# CRLF, NUL, special-token look-alikes, contractions, digit runs, long runs
TRICKY = [
    "",
    "a",
    "hello world",
    "Hello, World!  How's it going?\n\n",
    "I'll we've they're DON'T",
    "naïve café résumé e\u0301 a\u0300\u0301\u0302",
    "日本語のテキスト、中文字符。한국어",
    "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷",
    "line\r\nwindows\r\n\r\n",
    "nul\x00byte\x00\x00",
    "tabs\tand\x0bvertical\x0cfeed \u00a0nbsp \u2028ls",
    "numbers 1234567 3.14159 ١٢٣",
    "<mask> <eos><bos><pad><unk> <mask",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "     leading and trailing spaces     ",
    "\n",
    "ſ K Å ﬁ",  # case-folding oddities near the (?i:...) contraction branch
]

SMALL_CORPORA = [
    "the cat sat on the mat. the cat ate the rat. that is that.\n" * 3,
    "aaaa aaa aa a aaaaa baaa abab ababab aabb\n" * 2,
    "東京都の天気は晴れです。京都の天気は雨です。東京と京都。" * 3,
    "😀😀😃 emoji 😀 text 👍🏽👍🏽 ok 😀😃😃\n" * 3,
    "Crème brûlée, café au lait, naïve façade — déjà vu! Ça va? Ñandú.\r\n" * 3,
    "x = 12345 + 678; y = x * 2 # 1000000\n\tz = 'it''s' don't I'm we'll\n" * 2,
]

# Characters assigned only in recent Unicode versions (Python 3.11's unicodedata
# calls them "Cn") are left out where we compare with another regex engine: each
# engine's \p{L} / \p{N} tables follow its own Unicode version (see hf.py).
_text_piece = st.one_of(
    st.characters(blacklist_categories=("Cs", "Cn")),
    st.sampled_from(["\r\n", "\x00", " ", "  ", "\n", "e\u0301", "😀", "👍🏽", "中文", "<mask>", "<eos>", "'s", "123", "the"]),
)
text_st = st.lists(_text_piece, max_size=40).map("".join)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def corpus() -> str:
    return CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bpe_tokenizers(corpus: str) -> dict[str, BPETokenizer]:
    """One BPE per pattern, trained on a slice of the corpus plus the tricky strings
    (so that multi-byte characters get merges of their own)."""
    text = corpus[:60_000] + "".join(TRICKY) * 5
    return {p: train_tokenizer(text, kind="bpe", vocab_size=700, pattern=p) for p in PATTERNS}


@pytest.fixture(scope="module")
def corpus_bpe(corpus: str) -> BPETokenizer:
    return train_tokenizer(corpus, kind="bpe", vocab_size=2048, pattern="gpt4")


@pytest.fixture(scope="module")
def char_tok(corpus: str) -> Tokenizer:
    return train_tokenizer(corpus, kind="char")


# ---------------------------------------------------------------------------
# the naive reference trainer: recount every pair after every merge


def naive_merges(text: str, pattern: str, num_merges: int) -> list[tuple[int, int]]:
    """Plain BPE on the pre-split chunks. Tie rule: max count, then the smallest (a, b)."""
    chunks = [list(c.encode("utf-8")) for c in split_chunks(text, pattern)]
    merges = []
    for i in range(num_merges):
        counts: dict[tuple[int, int], int] = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        new_chunks = []
        for ids in chunks:
            out, j = [], 0
            while j < len(ids):
                if j + 1 < len(ids) and (ids[j], ids[j + 1]) == best:
                    out.append(256 + i)
                    j += 2
                else:
                    out.append(ids[j])
                    j += 1
            new_chunks.append(out)
        chunks = new_chunks
        merges.append(best)
    return merges


def _train_merges(text: str, pattern: str, num_merges: int) -> list[tuple[int, int]]:
    tok = train_tokenizer(text, kind="bpe", vocab_size=256 + len(DEFAULT_SPECIAL_TOKENS) + num_merges, pattern=pattern)
    return tok.merges


# ---------------------------------------------------------------------------
# known answers, small enough to check by hand


def test_pair_helpers_known_answers():
    assert pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert pair_counts([7, 7, 7]) == {(7, 7): 2}
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([7, 7, 7], (7, 7), 9) == [9, 7]
    assert split_chunks("Hello world!!", "gpt4") == ["Hello", " world", "!!"]
    assert split_chunks("Hello world!!", "none") == ["Hello world!!"]


def test_learn_merges_known_answers():
    # (a,a)=2 beats (a,b)=1; then (256,a)=1 ties (a,b)=1 and the smaller pair wins
    assert learn_merges({b"aaab": 1}, 2) == [(97, 97), (97, 98)]
    # overlapping runs merge left to right: "aaaa" -> (aa)(aa) -> (aaaa)
    assert learn_merges({b"aaaa": 1}, 5) == [(97, 97), (256, 256)]
    # all pairs tie at 1: smallest first
    assert learn_merges({b"dcba": 1}, 1) == [(98, 97)]
    # chunk frequencies weigh the counts; pairs never cross chunks
    assert learn_merges({b"ab": 1, b"cd": 3}, 1) == [(99, 100)]
    assert learn_merges({b"a": 5, b"b": 5}, 3) == []


def test_flatten_chunks_known_answer():
    sym, weight = flatten_chunks({b"ab": 3, b"c": 1})
    assert (list(sym), list(weight)) == ([-1, 97, 98, -1, 99, -1], [0, 3, 3, 3, 1, 1])


def test_bpe_ids_layout():
    tok = train_tokenizer("hi hi hi", kind="bpe", vocab_size=256 + 5 + 2, pattern="gpt4")
    assert tok.kind == "bpe"
    assert tok.merges == [(104, 105), (32, 256)]  # "hi", then " hi"
    assert tok.token_bytes(256) == b"hi" and tok.token_bytes(257) == b" hi"
    assert tok.special_tokens == {"<pad>": 258, "<unk>": 259, "<bos>": 260, "<eos>": 261, "<mask>": 262}
    assert tok.vocab_size == 263
    assert tok.token_bytes(261) == b"" and tok.token_bytes(65) == b"A"
    assert tok.encode("hi hi") == [256, 257]
    assert tok.encode("hih") == [256, 104]


def test_char_known_answer():
    tok = train_tokenizer("hello", kind="char", vocab_size=12345)
    assert tok.kind == "char"
    assert tok.vocab_size == 4 + 5
    assert tok.special_tokens == {"<pad>": 4, "<unk>": 5, "<bos>": 6, "<eos>": 7, "<mask>": 8}
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.encode("hex") == [1, 0, 5]  # x was never seen: <unk>
    assert tok.decode([1, 0, 2, 2, 3]) == "hello"
    assert tok.token_bytes(0) == b"e" and tok.token_bytes(5) == b""


# ---------------------------------------------------------------------------
# training agrees with the naive trainer


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("text", SMALL_CORPORA, ids=["english", "runs", "cjk", "emoji", "accents", "code"])
def test_training_matches_naive(text, pattern):
    n = 60
    assert _train_merges(text, pattern, n) == naive_merges(text, pattern, n)


@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=40, deadline=None)
@given(text=st.lists(st.sampled_from(["a", "b", "ab", " ", "aa", "é", "😀", "\n", "ba", "x", "1"]), max_size=60).map("".join))
def test_training_matches_naive_random(pattern, text):
    assert _train_merges(text, pattern, 25) == naive_merges(text, pattern, 25)


def test_training_progress_and_early_stop():
    calls = []
    tok = train_tokenizer("abcabc", kind="bpe", vocab_size=300, pattern="none", progress=lambda d, t: calls.append((d, t)))
    # only "abc" can be built: ab, then (ab)c, then (abc)(abc)
    assert tok.merges == [(97, 98), (256, 99), (257, 257)]
    assert calls == [(1, 39), (2, 39), (3, 39)]
    assert tok.vocab_size == 256 + 3 + 5  # smaller than asked: the text ran out of pairs


def test_vocab_size_validation():
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer("abc", kind="bpe", vocab_size=256 + 4)
    tok = train_tokenizer("abc", kind="bpe", vocab_size=256 + 5)
    assert tok.merges == [] and tok.vocab_size == 261
    tok = train_tokenizer("abc", kind="bpe", vocab_size=257, special_tokens=[])
    assert tok.merges == [(97, 98)] and tok.special_tokens == {}
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer("abc", kind="word")
    with pytest.raises(ValueError, match="pattern"):
        train_tokenizer("abc", pattern="gpt5")
    with pytest.raises(ValueError, match="distinct"):
        train_tokenizer("abc", special_tokens=["<a>", "<a>"])


# ---------------------------------------------------------------------------
# encoding agrees with tiktoken built from our merge table


def _tiktoken_for(tok: BPETokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {tok.token_bytes(i): i for i in range(256 + len(tok.merges))}
    assert len(ranks) == 256 + len(tok.merges)  # every token's bytes are distinct
    return tiktoken.Encoding(name=f"gptexp-{tok.pattern}", pat_str=SPLIT_PATTERNS[tok.pattern], mergeable_ranks=ranks, special_tokens={})


def test_encode_matches_tiktoken_on_corpus(corpus, corpus_bpe):
    enc = _tiktoken_for(corpus_bpe)
    ours = corpus_bpe.encode(corpus)
    assert ours == enc.encode_ordinary(corpus)
    assert corpus_bpe.decode(ours) == corpus
    assert 0.30 < len(ours) / len(corpus.encode("utf-8")) < 0.34  # ~0.319 tokens/byte


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_encode_matches_tiktoken_random(bpe_tokenizers, pattern):
    tok = bpe_tokenizers[pattern]
    enc = _tiktoken_for(tok)

    @FAST
    @given(text=text_st)
    def check(text):
        assert tok.encode(text) == enc.encode_ordinary(text)

    check()
    for text in TRICKY:
        assert tok.encode(text) == enc.encode_ordinary(text)


def _apply_merges_in_order(tok: BPETokenizer, text: str) -> list[int]:
    """The definition of BPE encoding, slowly: every merge in rank order, left to right."""
    out: list[int] = []
    for chunk in split_chunks(text, tok.pattern):
        ids = list(chunk.encode("utf-8"))
        for i, pair in enumerate(tok.merges):
            ids = merge_pair(ids, pair, 256 + i)
        out.extend(ids)
    return out


@pytest.mark.parametrize("pattern", PATTERNS)
def test_encode_matches_definition(bpe_tokenizers, pattern):
    # pattern "none" makes one chunk of the whole text, which takes the long-chunk
    # path (> 256 bytes); the other patterns take the per-chunk min search
    tok = bpe_tokenizers[pattern]
    text = "".join(TRICKY) * 3
    assert len(text.encode()) > 256
    fresh = BPETokenizer(tok.merges, pattern=pattern)
    assert fresh.encode(text) == _apply_merges_in_order(tok, text)
    for t in TRICKY:
        assert fresh.encode(t) == _apply_merges_in_order(tok, t)


def test_none_pattern_matches_tiktoken(bpe_tokenizers):
    tiktoken = pytest.importorskip("tiktoken")
    tok = bpe_tokenizers["none"]
    ranks = {tok.token_bytes(i): i for i in range(256 + len(tok.merges))}
    enc = tiktoken.Encoding(name="gptexp-none", pat_str=r"[\s\S]+", mergeable_ranks=ranks, special_tokens={})

    @FAST
    @given(text=text_st)
    def check(text):
        assert BPETokenizer(tok.merges, pattern="none").encode(text) == enc.encode_ordinary(text)

    check()
    text = "".join(TRICKY) * 3
    assert tok.encode(text) == enc.encode_ordinary(text)


# ---------------------------------------------------------------------------
# round trips, specials, surrogates


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bpe_round_trip_tricky(bpe_tokenizers, pattern):
    tok = bpe_tokenizers[pattern]
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("pattern", PATTERNS)
def test_bpe_round_trip_property(bpe_tokenizers, pattern):
    tok = bpe_tokenizers[pattern]

    @FAST
    @given(text=st.one_of(text_st, st.text(max_size=30)))
    def check(text):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")

    check()


def test_char_round_trip_inside_vocab(char_tok):
    @FAST
    @given(text=st.text(alphabet=st.sampled_from(sorted(char_tok.chars)), max_size=50))
    def check(text):
        assert char_tok.decode(char_tok.encode(text)) == text

    check()


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_specials_need_allow_special(bpe_tokenizers, kind):
    tok = bpe_tokenizers["gpt4"] if kind == "bpe" else train_tokenizer("".join(TRICKY), kind="char")
    specials = set(tok.special_tokens.values())

    unk = tok.special_tokens["<unk>"]
    known = set(tok.chars) if kind == "char" else None

    @FAST
    @given(text=text_st)
    def check(text):
        ids = tok.encode(text)
        if kind == "char":
            # the only special a char tokenizer makes from plain text is <unk>, one
            # per character it has never seen
            assert ids.count(unk) == sum(c not in known for c in text)
            ids = [i for i in ids if i != unk]
        assert not specials.intersection(ids)

    check()
    text = "to be<mask>or<eos>"
    ids = tok.encode(text, allow_special=True)
    assert ids.count(tok.special_tokens["<mask>"]) == 1 and ids.count(tok.special_tokens["<eos>"]) == 1
    assert tok.decode(ids) == text
    assert tok.encode("to be", allow_special=True) == tok.encode("to be")
    assert not specials.intersection(tok.encode(text))  # all of its characters are known


def test_specials_longest_match():
    tok = train_tokenizer("abc <s> <s>x", kind="bpe", vocab_size=270, special_tokens=["<s>", "<s>x"])
    s, sx = tok.special_tokens["<s>"], tok.special_tokens["<s>x"]
    ids = tok.encode("a<s>xb<s>", allow_special=True)
    assert ids.count(sx) == 1 and ids.count(s) == 1 and ids.index(sx) < ids.index(s)
    assert tok.decode(ids) == "a<s>xb<s>"


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_lone_surrogates_refused(kind):
    tok = train_tokenizer("abc", kind=kind, vocab_size=270)
    for bad in ["\ud800", "ab\udfffc"]:
        with pytest.raises(ValueError, match="surrogate"):
            tok.encode(bad)
        with pytest.raises(ValueError, match="surrogate"):
            tok.encode_for_training(bad)
        with pytest.raises(ValueError, match="surrogate"):
            train_tokenizer(bad, kind=kind, vocab_size=270)


def test_decode_invalid_utf8_replaces():
    tok = train_tokenizer("é", kind="bpe", vocab_size=261)
    assert tok.decode([0xC3]) == "\ufffd"
    assert tok.decode([0xFF, 97]) == "\ufffda"
    assert tok.decode([0xC3, 0xA9]) == "é"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([261])


def test_char_unknown_characters():
    tok = train_tokenizer("abc", kind="char")
    unk = tok.special_tokens["<unk>"]
    assert tok.encode("aé😀") == [0, unk, unk]
    enc = tok.encode_for_training("aé😀")
    assert enc.ids.tolist() == [0, unk, unk]
    assert enc.byte_counts.tolist() == [1, 2, 4]  # an <unk> keeps the bytes it replaced
    no_unk = train_tokenizer("abc", kind="char", special_tokens=["<pad>"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        no_unk.encode("abz")
    assert no_unk.encode("cab") == [2, 0, 1]


# ---------------------------------------------------------------------------
# encode_for_training


@pytest.mark.parametrize("pattern", PATTERNS)
def test_encode_for_training_bpe(bpe_tokenizers, pattern):
    tok = bpe_tokenizers[pattern]
    text = "".join(TRICKY)
    enc = tok.encode_for_training(text)
    assert isinstance(enc, EncodedText)
    assert enc.ids.dtype == np.int32 and enc.word_starts.dtype == bool
    assert enc.byte_counts.dtype in (np.uint8, np.int32)
    assert enc.ids.tolist() == tok.encode(text)
    assert enc.byte_counts.tolist() == [len(tok.token_bytes(i)) for i in enc.ids]
    assert enc.num_bytes == len(text.encode("utf-8"))
    chunks = split_chunks(text, pattern)
    assert int(enc.word_starts.sum()) == len(chunks)
    if pattern == "none":
        assert enc.word_starts.tolist() == [True] + [False] * (len(enc) - 1)
    empty = tok.encode_for_training("")
    assert len(empty) == 0 and empty.num_bytes == 0


def test_encode_for_training_char(char_tok):
    text = "First Citizen:\nBefore we proceed, hear me speak.é"
    enc = char_tok.encode_for_training(text)
    assert enc.ids.tolist() == char_tok.encode(text)
    assert enc.byte_counts.tolist() == [len(c.encode()) for c in text]
    starts = [i for i, f in enumerate(enc.word_starts) if f]
    offsets, pos = [], 0
    for c in split_chunks(text, "gpt4"):
        offsets.append(pos)
        pos += len(c)
    assert starts == offsets
    none = train_tokenizer("ab c", kind="char", pattern="none").encode_for_training("ab c")
    assert none.word_starts.tolist() == [True, False, False, False]


def _word_start_byte_offsets(enc: EncodedText) -> list[int]:
    offsets = np.cumsum(enc.byte_counts.astype(np.int64)) - enc.byte_counts
    return offsets[enc.word_starts].tolist()


def test_word_starts_agree_char_vs_bpe(bpe_tokenizers, corpus):
    bpe = bpe_tokenizers["gpt4"]
    char = train_tokenizer(corpus[:5000], kind="char")  # many characters below are unknown: <unk> keeps offsets
    text = corpus[100_000:120_000] + "".join(TRICKY)
    assert _word_start_byte_offsets(char.encode_for_training(text)) == _word_start_byte_offsets(bpe.encode_for_training(text))

    @FAST
    @given(text=text_st)
    def check(text):
        a = char.encode_for_training(text)
        b = bpe.encode_for_training(text)
        assert _word_start_byte_offsets(a) == _word_start_byte_offsets(b)

    check()


def test_encode_for_training_corpus_fast_and_consistent(corpus, corpus_bpe, char_tok):
    enc = corpus_bpe.encode_for_training(corpus)
    assert enc.num_bytes == len(corpus.encode("utf-8"))
    cenc = char_tok.encode_for_training(corpus)
    assert len(cenc) == len(corpus) and cenc.num_bytes == enc.num_bytes
    assert _word_start_byte_offsets(cenc) == _word_start_byte_offsets(enc)


def test_encoded_text_checks_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        EncodedText(np.zeros(3, np.int32), np.zeros(2, np.uint8), np.zeros(3, bool))


# ---------------------------------------------------------------------------
# the file format


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_save_load_identical(tmp_path, bpe_tokenizers, char_tok, kind):
    tok = bpe_tokenizers["gpt2"] if kind == "bpe" else char_tok
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(tok) and loaded.kind == kind
    assert loaded.to_dict() == tok.to_dict()
    assert loaded.fingerprint() == tok.fingerprint()
    assert loaded.vocab_size == tok.vocab_size and loaded.special_tokens == tok.special_tokens
    assert loaded.pattern == tok.pattern
    assert Tokenizer.from_dict(tok.to_dict()).to_dict() == tok.to_dict()
    assert type(tok).from_dict(tok.to_dict()).fingerprint() == tok.fingerprint()

    @FAST
    @given(text=text_st)
    def check(text):
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.encode(text, allow_special=True) == tok.encode(text, allow_special=True)

    check()


def test_file_is_human_readable(tmp_path, bpe_tokenizers):
    tok = bpe_tokenizers["gpt4"]
    path = tmp_path / "tok.json"
    tok.save(path)
    text = path.read_text(encoding="utf-8")
    d = json.loads(text)
    assert d["format"] == "gptexp-tokenizer" and d["version"] == 1 and d["kind"] == "bpe"
    assert d["merges"][0] == list(tok.merges[0])
    assert f"[{tok.merges[0][0]}, {tok.merges[0][1]}]" in text.splitlines()[text.splitlines().index('  "merges": [') + 1]
    assert d["vocab_view"]["256"] == tok.token_bytes(256).decode("utf-8", errors="backslashreplace")
    tok.save(path, readable_vocab=False)
    assert "vocab_view" not in json.loads(path.read_text())
    assert load_tokenizer(path).fingerprint() == tok.fingerprint()


def test_fingerprint(bpe_tokenizers):
    tok = bpe_tokenizers["gpt4"]
    assert tok.fingerprint() == hashlib.sha256(canonical_json(tok.to_dict()).encode()).hexdigest()
    assert len({t.fingerprint() for t in bpe_tokenizers.values()}) == 3
    other = BPETokenizer(tok.merges[:-1], pattern="gpt4")
    assert other.fingerprint() != tok.fingerprint()
    assert BPETokenizer(tok.merges, pattern="gpt4").fingerprint() == tok.fingerprint()


def _broken_variants(good: dict) -> dict[str, object]:
    def edit(**changes):
        d = json.loads(json.dumps(good))
        for k, v in changes.items():
            if v is KeyError:
                del d[k]
            else:
                d[k] = v
        return d

    return {
        "version 2": (edit(version=2), "version"),
        "no version": (edit(version=KeyError), "version"),
        "other format": (edit(format="something"), "format"),
        "kind": (edit(kind="word"), "kind"),
        "missing merges": (edit(merges=KeyError), "merges"),
        "merges not list": (edit(merges="1 2"), "merges"),
        "merge of 3": (edit(merges=[[1, 2, 3]]), "merges"),
        "merge str ids": (edit(merges=[["a", "b"]]), "merges"),
        "future id": (edit(merges=[[1, 2], [300, 2]]), "does not exist"),
        "special ids": (edit(special_tokens={"<pad>": 0}), "special token ids"),
        "special type": (edit(special_tokens=["<pad>"]), "special_tokens"),
        "vocab_size": (edit(vocab_size=5), "vocab_size"),
        "pattern": (edit(pattern="gpt9"), "pattern"),
        "unknown key": (edit(extra=1), "unknown field"),
        "list": ([1, 2], "JSON object"),
    }


def test_broken_files_raise_clear_errors(tmp_path, bpe_tokenizers, char_tok):
    good = bpe_tokenizers["gpt4"].to_dict()
    for name, (content, needle) in _broken_variants(good).items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps(content))
        with pytest.raises(TokenizerFileError, match=needle) as info:
            load_tokenizer(path)
        assert str(path) in str(info.value), name
    good_path = tmp_path / "good.json"
    bpe_tokenizers["gpt4"].save(good_path)
    raw = good_path.read_bytes()
    cases = {
        "truncated.json": (raw[: len(raw) // 2], "not valid JSON"),
        "empty.json": (b"", "not valid JSON"),
        "garbage.json": (b"\x00\xff\xfe binary", "not UTF-8"),
        "text.json": (b"merges: 1 2\n", "not valid JSON"),
    }
    for name, (content, needle) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TokenizerFileError, match=needle) as info:
            load_tokenizer(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(TokenizerFileError, match="no such file"):
        load_tokenizer(tmp_path / "missing.json")
    with pytest.raises(TokenizerFileError, match="directory"):
        load_tokenizer(tmp_path)
    # char files are checked too
    d = char_tok.to_dict()
    d["chars"] = ["ab"]
    (tmp_path / "char.json").write_text(json.dumps(d))
    with pytest.raises(TokenizerFileError, match="chars"):
        load_tokenizer(tmp_path / "char.json")
    d["chars"] = ["b", "a"]
    (tmp_path / "char.json").write_text(json.dumps(d))
    with pytest.raises(TokenizerFileError, match="sorted"):
        load_tokenizer(tmp_path / "char.json")
    assert issubclass(TokenizerFileError, ValueError)


def test_no_torch_or_wandb_imported():
    code = (
        "import sys, gptexp.tokenizers, gptexp.cli.tokenizer, gptexp.tokenizers.hf\n"
        "bad = [m for m in ('torch', 'wandb', 'tokenizers', 'tiktoken') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)
