"""Character tokenizer: one token per Unicode code point.

Vocabulary = the sorted unique characters of the training text (ids 0..n-1 in
code point order), then the special tokens. A character never seen in training
encodes to <unk> (a ValueError if "<unk>" is not a special token).

The `pattern` plays no part in the ids: it only decides the word starts of
encode_for_training, so that a char model and a BPE model trained with the same
pattern mask the same words (whole-word masking) on the same text.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .base import (
    DEFAULT_SPECIAL_TOKENS,
    EncodedText,
    Tokenizer,
    TokenizerFileError,
    chunk_start_mask,
    split_chunks,
    utf8_bytes,
)

UNK = "<unk>"


def code_points(text: str) -> np.ndarray:
    """The code points of text as a uint32 array.

    code_points("aé😀") -> [97, 233, 128512]
    """
    utf8_bytes(text)  # refuse lone surrogates with a clear message first
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def utf8_lengths(cps: np.ndarray) -> np.ndarray:
    """UTF-8 byte length of each code point (uint8).

    utf8_lengths([97, 233, 8364, 128512]) -> [1, 2, 3, 4]      # "a", "é", "€", "😀"
    """
    cps = np.asarray(cps)
    return (1 + (cps >= 0x80) + (cps >= 0x800) + (cps >= 0x10000)).astype(np.uint8)


class CharTokenizer(Tokenizer):
    kind = "char"
    _CONTENT_KEYS = ("chars",)

    def __init__(
        self,
        chars: Iterable[str],
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    ) -> None:
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"char vocabulary entries must be single characters, got {c!r}")
            utf8_bytes(c)
        if chars != sorted(set(chars)):
            raise ValueError("char vocabulary must be sorted and without duplicates")
        super().__init__(len(chars), pattern, special_tokens)
        self._chars = chars
        self._cps = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted: searchsorted finds ids
        self._unk_id = self._special_to_id.get(UNK)

    @property
    def chars(self) -> list[str]:
        return list(self._chars)

    def _ordinary_bytes(self, i: int) -> bytes:
        return self._chars[i].encode("utf-8")

    def _ids_of(self, cps: np.ndarray, text: str) -> np.ndarray:
        """Vectorized lookup: the id of a char is its index in the sorted vocabulary."""
        if len(self._cps) == 0:
            idx = np.zeros(len(cps), dtype=np.int64)
            known = np.zeros(len(cps), dtype=bool)
        else:
            idx = np.searchsorted(self._cps, cps)
            known = self._cps[np.minimum(idx, len(self._cps) - 1)] == cps
        if not known.all():
            if self._unk_id is None:
                first = int(np.argmin(known))
                raise ValueError(
                    f"character {text[first]!r} (U+{ord(text[first]):04X}) at index {first} is not in the "
                    f"vocabulary and there is no {UNK} special token to stand for it"
                )
            idx = np.where(known, idx, self._unk_id)
        return idx.astype(np.int32)

    def _encode_ordinary(self, text: str) -> list[int]:
        return self._ids_of(code_points(text), text).tolist()

    def _encode_training(self, text: str) -> EncodedText:
        cps = code_points(text)
        ids = self._ids_of(cps, text)
        chunks = split_chunks(text, self.pattern)
        lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        return EncodedText(
            ids=ids,
            # an <unk> still stands for the bytes of the character it replaced
            byte_counts=utf8_lengths(cps),
            word_starts=chunk_start_mask(lengths, len(ids)),
        )

    def decode(self, ids: Iterable[int]) -> str:
        table = self._chars
        out = []
        for i in ids:
            i = self._check_id(i)
            out.append(table[i] if i < self._base_size else self._id_to_special[i])
        return "".join(out)

    @classmethod
    def from_spec(cls, spec: Any, train_text: str) -> CharTokenizer:
        return train_char(train_text, pattern=spec.pattern, special_tokens=spec.special_tokens)

    def _content(self) -> dict[str, Any]:
        return {"chars": list(self._chars)}

    @classmethod
    def _from_content(cls, d: dict[str, Any], pattern: str, special_tokens: list[str], where: str) -> "CharTokenizer":
        chars = d["chars"]
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise TokenizerFileError(f"{where}: \"chars\" must be a list of single characters")
        return cls(chars, pattern=pattern, special_tokens=special_tokens)


def train_char(
    text: str,
    pattern: str = "gpt4",
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
) -> CharTokenizer:
    """The char tokenizer of text: its sorted unique characters, then the specials.

    train_char("hello", special_tokens=["<unk>"]) -> chars "e h l o" (ids 0..3), "<unk>" = 4
    """
    utf8_bytes(text)
    return CharTokenizer(sorted(set(text)), pattern=pattern, special_tokens=special_tokens)
