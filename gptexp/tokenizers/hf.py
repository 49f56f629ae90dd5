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
export encodes like our encode(text, allow_special=True): a literal "<mask>" in
the text becomes the mask id there, while gptexp's plain encode(text) (and
training data) reads it as the characters "<", "m", ... .

Beside tokenizer.json go tokenizer_config.json and special_tokens_map.json,
which tell transformers' AutoTokenizer which special token plays which role
(pad_token, mask_token, bos/eos/unk; roles found by name, see roles.py), so
`tokenizer(texts, padding=True)` works.

One known gap: the regex classes \p{L} and \p{N} follow each engine's Unicode
tables. Python's `regex` (2026) knows letters and digits added in Unicode 16/17
(e.g. U+10940) that HF's Oniguruma does not yet, so text containing those few
thousand newest characters can be split, and so encoded, differently. All
characters assigned in Unicode 14 and earlier were checked to agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

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
    from .hf_file import HFFileTokenizer

    if isinstance(tok, HFFileTokenizer):
        return tok.hf_json()  # it came from such a file: hand it back unchanged
    if isinstance(tok, BPETokenizer):
        return _bpe_json(tok)
    if isinstance(tok, CharTokenizer):
        return _char_json(tok)
    raise NotImplementedError(f"no Hugging Face export for {type(tok).__name__}")


TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"


def transformers_configs(tok: Tokenizer, model_max_length: int | None = None) -> dict[str, dict[str, Any]]:
    """tokenizer_config.json and special_tokens_map.json for transformers' AutoTokenizer:
    the fast tokenizer class (no custom code) and each role's token (pad_token, mask_token, ...)."""
    from .roles import role_tokens

    roles = {f"{role}_token": text for role, text in role_tokens(tok.special_tokens).items()}
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,  # decode gives back the text exactly
        "add_bos_token": False,
        "add_eos_token": False,
        **roles,
    }
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    return {TOKENIZER_CONFIG: config, SPECIAL_TOKENS_MAP: roles}


def write_hf_tokenizer_dir(tok: Tokenizer, model_max_length: int | None = None) -> Callable[[Path], None]:
    """A writer of tokenizer.json + the transformers configs into a directory (checked up front:
    a tokenizer HF cannot represent raises ValueError before anything is written)."""
    content = hf_json(tok)
    configs = transformers_configs(tok, model_max_length)

    def write(directory: Path) -> None:
        _write_json(directory / "tokenizer.json", content)
        for name, config in configs.items():
            _write_json(directory / name, config)

    return write


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def export_hf(tok: Tokenizer, path: str | Path) -> list[Path]:
    """Write tok as a Hugging Face tokenizer.json that `tokenizers.Tokenizer.from_file`
    loads and that encodes any text to the same ids as tok.encode(text, allow_special=True),
    plus tokenizer_config.json and special_tokens_map.json beside it (same directory), so that
    `transformers.AutoTokenizer.from_pretrained(directory)` sees pad_token, mask_token and the rest
    (AutoTokenizer reads the JSON file named tokenizer.json). Returns the files written."""
    path = Path(path)
    content = hf_json(tok)
    configs = transformers_configs(tok)
    _write_json(path, content)
    written = [path]
    for name, config in configs.items():
        _write_json(path.parent / name, config)
        written.append(path.parent / name)
    return written
