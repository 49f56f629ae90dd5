r"""Export a gptexp tokenizer as a Hugging Face `tokenizers` JSON (tokenizer.json).

The file is written by hand with the json module: the `tokenizers` package is
needed only to load it (and by the tests), never by gptexp itself.

bpe  -> BPE model over the byte-level alphabet (each byte shown as one printable
        character, the GPT-2 convention HF's ByteLevel uses), pre-tokenizer
        Split(our regex, Isolated) + ByteLevel(use_regex=False) so that HF cuts
        the text exactly where we do, byte-level decoder, and our special
        tokens as added special tokens with their ids.
char -> WordLevel model over single characters (a Split on every character),
        "<unk>" as the unknown token, a Fuse decoder. Without "<unk>" among the
        special tokens HF fails on unseen characters, as our encode does.

HF always treats added special tokens found in text as specials, so the
export encodes like our encode(text, allow_special=True).

One known gap: the regex classes \p{L} and \p{N} follow each engine's Unicode
tables. Python's `regex` (2026) knows letters and digits added in Unicode 16/17
(e.g. U+10940) that HF's Oniguruma does not yet, so text containing those few
thousand newest characters can be split, and so encoded, differently. All
characters assigned in Unicode 14 and earlier were checked to agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import SPLIT_PATTERNS, Tokenizer
from .bpe import BPETokenizer
from .char import CharTokenizer


def byte_alphabet() -> list[str]:
    """The printable character that stands for each byte value (index = byte).

    Printable Latin-1 bytes stand for themselves; the others (controls, space,
    DEL, NBSP, soft hyphen) are moved to U+0100 onwards in byte order, so that
    tokens never contain whitespace or control characters:
    byte_alphabet()[ord("a")] -> "a";  [ord(" ")] -> "Ġ" (U+0120);  [0] -> "Ā" (U+0100)
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    alphabet = []
    moved = 0
    for b in range(256):
        if b in printable:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(256 + moved))
            moved += 1
    return alphabet


def _added_tokens(tok: Tokenizer) -> list[dict[str, Any]]:
    return [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for t, i in tok.special_tokens.items()
    ]


def _bpe_json(tok: BPETokenizer) -> dict[str, Any]:
    alphabet = byte_alphabet()

    def show(i: int) -> str:
        return "".join(alphabet[b] for b in tok.token_bytes(i))

    n_ordinary = 256 + len(tok.merges)
    vocab = {}
    for i in range(n_ordinary):
        s = show(i)
        if s in vocab:
            raise ValueError(f"tokens {vocab[s]} and {i} stand for the same bytes; HF's vocabulary cannot hold both")
        vocab[s] = i
    clash = [t for t in tok.special_tokens if t in vocab]
    if clash:
        # HF would give the added token the id of the ordinary token with that text
        raise ValueError(f"special token(s) {clash} equal the byte-level text of ordinary tokens; HF cannot tell them apart")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    if tok.pattern == "none":
        pre_tokenizer: dict[str, Any] = byte_level
    else:
        split = {"type": "Split", "pattern": {"Regex": SPLIT_PATTERNS[tok.pattern]}, "behavior": "Isolated", "invert": False}
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(tok),
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,  # True would take whole chunks found in vocab, skipping merges
            "vocab": vocab,
            # "a b" strings: byte-level token text never contains a space
            "merges": [f"{show(a)} {show(b)}" for a, b in tok.merges],
        },
    }


def _char_json(tok: CharTokenizer) -> dict[str, Any]:
    vocab = {c: i for i, c in enumerate(tok.chars)}
    clash = [t for t in tok.special_tokens if t in vocab]
    if clash:
        raise ValueError(f"special token(s) {clash} are also ordinary characters; HF cannot tell them apart")
    vocab.update(tok.special_tokens)  # WordLevel needs its unk token in the vocabulary
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": _added_tokens(tok),
        "normalizer": None,
        # every character is its own word ([\s\S] also matches newlines)
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated", "invert": False},
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def hf_json(tok: Tokenizer) -> dict[str, Any]:
    """The tokenizer.json content for tok, as a dict."""
    if isinstance(tok, BPETokenizer):
        return _bpe_json(tok)
    if isinstance(tok, CharTokenizer):
        return _char_json(tok)
    raise NotImplementedError(f"no Hugging Face export for {type(tok).__name__}")


def export_hf(tok: Tokenizer, path: str | Path) -> None:
    """Write tok as a Hugging Face tokenizer.json that `tokenizers.Tokenizer.from_file`
    loads and that encodes any text to the same ids as tok.encode(text, allow_special=True)."""
    Path(path).write_text(json.dumps(hf_json(tok), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
