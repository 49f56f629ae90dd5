"""A pretrained Hugging Face `tokenizers` file used as a gptexp tokenizer (`tokenizer: {kind: hf}`).

Any tokenizer.json works: GPT-2's byte-level BPE, a SentencePiece-style Metaspace/Unigram file,
BERT's WordPiece, or one `gptexp tokenizer export-hf` wrote. The run keeps the whole file inside
its own tokenizer.json (kind "hf", field "hf_json"), so a run dir stays self-contained.

Bits per byte stays comparable because every token carries the UTF-8 bytes of the ORIGINAL text
it stands for, summing to the text's byte length exactly:

* byte-level files (a ByteLevel decoder and no normalizer): each token's text maps back through
  GPT-2's byte alphabet to the very bytes it stands for; a character split over two tokens
  counts its bytes where they fall.
* all others (Metaspace, WordPiece, normalizers): from the offsets HF reports into the original
  text. Each character's bytes go to the first token whose span reaches it; characters no token
  covers (the spaces WordPiece drops, text a normalizer removed) go to the next token, trailing
  ones to the last. A character covered by two tokens (a byte-fallback split) counts once.

Special tokens: the file's added tokens marked special. `encode(text)` treats their literal text
as ordinary text (HF's encode_special_tokens), `encode(text, allow_special=True)` turns it into
the special ids, as for gptexp's own tokenizers. No post-processor template is applied ([CLS] and
[SEP] are never added): training windows are cut from one long stream.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gptexp.limits import MAX_TOKENIZER_FILE_BYTES
from gptexp.regular_file import FileRefused, read_regular

from .base import EncodedText, Tokenizer, TokenizerFileError, special_splitter, tokenizer_file_refusal, utf8_bytes


def _byte_decoder() -> dict[str, int]:
    from .hf import byte_alphabet

    return {c: b for b, c in enumerate(byte_alphabet())}


def _has_type(component: Any, name: str) -> bool:
    """Whether a tokenizer.json component (possibly a Sequence) contains a part of type name."""
    if not isinstance(component, dict):
        return False
    if component.get("type") == name:
        return True
    parts = component.get("pretokenizers") or component.get("decoders") or component.get("normalizers") or []
    return any(_has_type(part, name) for part in parts)


class HFFileTokenizer(Tokenizer):
    kind = "hf"
    _CONTENT_KEYS = ("hf_json",)

    def __init__(self, hf_json: dict[str, Any], source: str = "<dict>") -> None:
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError:
            raise TokenizerFileError(f"{source}: tokenizer kind hf needs the `tokenizers` package (pip install tokenizers)") from None
        if not isinstance(hf_json, dict):
            raise TokenizerFileError(f"{source}: expected a Hugging Face tokenizer.json object")
        try:
            self._hf = HFTokenizer.from_str(json.dumps(hf_json))
        except Exception as err:  # tokenizers raises its own Exception type for a bad file
            raise TokenizerFileError(f"{source}: not a Hugging Face tokenizer.json: {str(err).splitlines()[0]}") from None
        self._json = hf_json
        self.pattern = "none"
        added = self._hf.get_added_tokens_decoder()
        self._special_to_id = {t.content: i for i, t in sorted(added.items()) if t.special}
        self._id_to_special = {i: t for t, i in self._special_to_id.items()}
        self._special_re = special_splitter(self._special_to_id)
        vocab = self._hf.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1 if vocab else 0
        self._base_size = self._vocab_size  # every id is "ordinary" for the base class's checks
        # Exact per-token bytes for byte-level files; offsets otherwise (see the module docstring).
        self._byte_level = _has_type(hf_json.get("decoder"), "ByteLevel") and hf_json.get("normalizer") is None
        self._byte_of = _byte_decoder() if self._byte_level else {}

    @classmethod
    def from_file(cls, path: str | Path) -> HFFileTokenizer:
        path = Path(path)
        try:
            raw = json.loads(read_regular(path, MAX_TOKENIZER_FILE_BYTES).decode("utf-8"))
        except FileRefused as refused:
            raise TokenizerFileError(tokenizer_file_refusal(refused)) from None
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise TokenizerFileError(f"{path}: not a readable tokenizer.json ({err})") from None
        return cls(raw, source=str(path))

    @classmethod
    def from_spec(cls, spec: Any, train_text: str) -> HFFileTokenizer:
        """A pretrained file is used as it is: train_text is not looked at."""
        return cls.from_file(spec.path)

    # -- vocabulary ------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_to_id)

    def _ordinary_bytes(self, i: int) -> bytes:
        token = self._hf.id_to_token(i)
        if token is None:
            return b""
        if self._byte_level and all(c in self._byte_of for c in token):
            return bytes(self._byte_of[c] for c in token)
        return self._hf.decode([i], skip_special_tokens=False).encode("utf-8")

    def token_bytes(self, i: int) -> bytes:
        i = self._check_id(i)
        return b"" if i in self._id_to_special else self._ordinary_bytes(i)

    def vocab_view(self) -> dict[str, str]:
        return {str(i): self._hf.id_to_token(i) or "" for i in range(self._vocab_size)}

    # -- encoding --------------------------------------------------------------------------

    def _encoding(self, text: str, allow_special: bool) -> Any:
        self._hf.encode_special_tokens = not allow_special  # literal "<mask>" is text unless allowed
        return self._hf.encode(text, add_special_tokens=False)

    def _encode_ordinary(self, text: str) -> list[int]:
        return list(self._encoding(text, allow_special=False).ids)

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        utf8_bytes(text)
        return list(self._encoding(text, allow_special).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self._hf.decode([self._check_id(i) for i in ids], skip_special_tokens=False)

    def _encode_training(self, text: str) -> EncodedText:
        encoding = self._encoding(text, allow_special=False)
        ids = np.asarray(encoding.ids, dtype=np.int32)
        total = len(text.encode("utf-8"))
        counts = None
        if self._byte_level:
            counts = np.asarray([len(self._ordinary_bytes(i)) for i in encoding.ids], dtype=np.int64)
            if counts.sum() != total:  # a file whose byte-level tokens do not spell the text
                counts = None
        if counts is None:
            counts = self._counts_from_offsets(text, encoding.offsets)
        word_ids = encoding.word_ids
        starts = np.ones(len(ids), dtype=np.bool_)
        for k in range(1, len(ids)):
            starts[k] = word_ids[k] is None or word_ids[k] != word_ids[k - 1]
        dtype = np.uint8 if counts.size == 0 or counts.max() <= 255 else np.int32
        return EncodedText(ids, counts.astype(dtype), starts)

    @staticmethod
    def _counts_from_offsets(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
        """UTF-8 bytes per token from character offsets (see the module docstring)."""
        char_bytes = np.fromiter((len(c.encode("utf-8")) for c in text), dtype=np.int64, count=len(text))
        cumulative = np.concatenate(([0], np.cumsum(char_bytes)))  # bytes of text[:i]
        counts = np.zeros(len(offsets), dtype=np.int64)
        assigned = 0  # characters given to tokens so far
        for k, (_, end) in enumerate(offsets):
            end = min(max(end, assigned), len(text))
            counts[k] = cumulative[end] - cumulative[assigned]
            assigned = end
        if len(offsets):
            counts[-1] += cumulative[-1] - cumulative[assigned]
        return counts

    # -- the file format -------------------------------------------------------------------

    def _content(self) -> dict[str, Any]:
        return {"hf_json": self._json}

    @classmethod
    def _from_content(cls, d: dict[str, Any], pattern: str, special_tokens: list[str], where: str) -> HFFileTokenizer:
        return cls(d["hf_json"], source=where)

    def hf_json(self) -> dict[str, Any]:
        """The Hugging Face tokenizer.json content this tokenizer was made from."""
        return self._json
