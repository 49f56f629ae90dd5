"""Tokenizers for gptexp: a character tokenizer and a byte-level BPE, one save
format, and an exporter to Hugging Face `tokenizers` JSON.

    from gptexp.tokenizers import train_tokenizer, load_tokenizer
    tok = train_tokenizer(text, kind="bpe", vocab_size=2048, pattern="gpt4")
    tok.save("tokenizer.json"); tok = load_tokenizer("tokenizer.json")

Nothing here imports torch or wandb (the CLI imports this package).
"""

from __future__ import annotations

from typing import Callable, Iterable

from .base import (
    DEFAULT_SPECIAL_TOKENS,
    SPLIT_PATTERNS,
    EncodedText,
    Tokenizer,
    TokenizerFileError,
    load_tokenizer,
)
from .bpe import BPETokenizer, train_bpe
from .char import CharTokenizer, train_char

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "SPLIT_PATTERNS",
    "BPETokenizer",
    "CharTokenizer",
    "EncodedText",
    "Tokenizer",
    "TokenizerFileError",
    "load_tokenizer",
    "train_tokenizer",
]


def train_tokenizer(
    text: str,
    kind: str = "bpe",
    vocab_size: int = 2048,
    pattern: str = "gpt4",
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    progress: Callable[[int, int], None] | None = None,
) -> Tokenizer:
    """Train a tokenizer on text.

    kind "bpe": byte-level BPE with vocab_size = 256 + merges + len(special_tokens);
                pattern (gpt2 | gpt4 | none) pre-splits the text; progress(done, total)
                is called after each merge.
    kind "char": vocab_size is ignored; pattern only sets the word starts of
                encode_for_training; progress is not called.
    """
    if kind == "bpe":
        return train_bpe(text, vocab_size=vocab_size, pattern=pattern, special_tokens=special_tokens, progress=progress)
    if kind == "char":
        return train_char(text, pattern=pattern, special_tokens=special_tokens)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'char'")
