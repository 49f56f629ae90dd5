"""The Hugging Face export encodes exactly like our tokenizers (encode with allow_special=True)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptexp.tokenizers import train_tokenizer
from gptexp.tokenizers.hf import byte_alphabet, export_hf, hf_json

hf_tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "tinyshakespeare.txt"

TRICKY = [
    "Hello, World!  How's it going?\n\n",
    "I'll we've they're DON'T",
    "naïve café e\u0301 a\u0300\u0301\u0302 日本語のテキスト 한국어",
    "emoji 😀👍🏽 👨‍👩‍👧 🇫🇷",
    "line\r\nwindows\r\n\r\n nul\x00byte\x00",
    "tabs\tand\x0bvertical\x0cfeed \u00a0nbsp \u2028ls \x1c\x1d\x85",
    "numbers 1234567 3.14159 ١٢٣",
    "<mask> <eos><bos><pad><unk> <mask <<mask>>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa     trailing   ",
    "ſ K Å ﬁ 'S 'LL",
]

# Characters unassigned in Python 3.11's Unicode 14 tables ("Cn") are left out:
# Python's regex module knows newer Unicode letters (e.g. U+10940) that HF's
# Oniguruma does not, so the split of such text can differ (documented in hf.py).
ASSIGNED = st.characters(blacklist_categories=("Cs", "Cn"))
_piece = st.one_of(
    ASSIGNED,
    st.sampled_from(["\r\n", "\x00", " ", "  ", "\n", "e\u0301", "😀", "中文", "<mask>", "<eos>", "'s", "'LL", "123"]),
)
text_st = st.lists(_piece, max_size=40).map("".join)
FAST = settings(max_examples=80, deadline=None)


@pytest.fixture(scope="module")
def corpus() -> str:
    return CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="module", params=["gpt2", "gpt4", "none", "char"])
def exported(request, corpus, tmp_path_factory):
    """(our tokenizer, the HF tokenizer loaded from our export), one per pattern and for char."""
    text = corpus[:50_000] + "".join(TRICKY) * 3
    if request.param == "char":
        tok = train_tokenizer(text, kind="char")
    else:
        tok = train_tokenizer(text, kind="bpe", vocab_size=600, pattern=request.param)
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    export_hf(tok, path)
    return tok, hf_tokenizers.Tokenizer.from_file(str(path))


def _hf_ids(hf, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


def test_byte_alphabet_is_hf_byte_level():
    alphabet = byte_alphabet()
    assert len(set(alphabet)) == 256
    assert set(alphabet) == set(hf_tokenizers.pre_tokenizers.ByteLevel.alphabet())
    assert alphabet[ord("a")] == "a" and alphabet[ord(" ")] == "\u0120" and alphabet[0] == "\u0100"


def test_same_ids_on_corpus(exported, corpus):
    tok, hf = exported
    text = corpus if tok.pattern != "none" else corpus[:200_000]
    assert _hf_ids(hf, text) == tok.encode(text, allow_special=True)


def test_same_ids_on_tricky_text(exported):
    tok, hf = exported
    for text in TRICKY:
        assert _hf_ids(hf, text) == tok.encode(text, allow_special=True), text
    assert hf.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    for name, i in tok.special_tokens.items():
        assert hf.token_to_id(name) == i



def test_same_ids_random_unicode(exported):
    tok, hf = exported

    @FAST
    @given(text=st.one_of(text_st, st.text(ASSIGNED, max_size=30)))
    def check(text):
        assert _hf_ids(hf, text) == tok.encode(text, allow_special=True)

    check()


def test_hf_decodes_our_ids(exported):
    tok, hf = exported
    for text in TRICKY:
        ids = tok.encode(text)
        if tok.kind == "bpe" or all(c in tok.chars for c in text):
            assert hf.decode(ids) == text


def test_export_is_plain_json(tmp_path):
    tok = train_tokenizer("hello hello world", kind="bpe", vocab_size=270, pattern="gpt4")
    d = hf_json(tok)
    assert d["model"]["type"] == "BPE" and len(d["model"]["merges"]) == len(tok.merges)
    assert [t["id"] for t in d["added_tokens"]] == list(tok.special_tokens.values())
    export_hf(tok, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text(encoding="utf-8")) == d


def test_special_token_clash_is_refused():
    # "<s>" learned as an ordinary token would get the special token's HF id
    tok = train_tokenizer("<s><s><s><s>", kind="bpe", vocab_size=256 + 1 + 3, pattern="none", special_tokens=["<s>"])
    assert b"<s>" in [tok.token_bytes(i) for i in range(256, 256 + len(tok.merges))]
    with pytest.raises(ValueError, match="special token"):
        hf_json(tok)
