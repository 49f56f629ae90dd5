"""What every gptexp tokenizer shares: special tokens, the split patterns, the
training view of an encoding (EncodedText) and the versioned JSON file format.

A tokenizer maps text to ids in two layers:

* ordinary text is handled by the concrete kind (char.py, bpe.py);
* special tokens ("<pad>", "<eos>", ...) take the ids right after the ordinary
  vocabulary. They stand for no bytes of text (token_bytes(i) == b"") and are
  produced from literal text ONLY when the caller asks for it
  (encode(..., allow_special=True)), so a corpus that happens to contain the
  string "<eos>" cannot inject control tokens.

The file format is one JSON object:

    {"format": "gptexp-tokenizer", "version": 1, "kind": "bpe" | "char",
     "pattern": "gpt4", "special_tokens": {"<pad>": 2043, ...}, "vocab_size": 2048,
     ...kind-specific fields ("merges" or "chars")...,
     "vocab_view": {...}}            # optional, for humans; ignored on load

Everything except "vocab_view" is validated on load; any problem raises
TokenizerFileError with a message that names the file.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import regex

from gptexp.limits import MAX_TOKENIZER_FILE_BYTES
from gptexp.regular_file import FileRefused, read_regular, refusal_message

FILE_FORMAT = "gptexp-tokenizer"
FILE_VERSION = 1

DEFAULT_SPECIAL_TOKENS: list[str] = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]

# The two well-known pre-split patterns. Text is cut into chunks by these
# regexes first; BPE merges never cross a chunk boundary, and the chunks are
# also the "words" for whole-word masking. "none" means the whole text is one
# chunk (plain byte-pair encoding).
SPLIT_PATTERNS: dict[str, str] = {
    # GPT-2 (openai/gpt-2 encoder.py)
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    # GPT-4 (tiktoken cl100k_base, in the form without the later "\s++$" branch;
    # Python's regex, Rust's fancy-regex and Oniguruma all read it the same way)
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
}
PATTERN_NAMES = ("gpt2", "gpt4", "none")

_COMPILED: dict[str, regex.Pattern] = {name: regex.compile(p) for name, p in SPLIT_PATTERNS.items()}


class TokenizerFileError(ValueError):
    """A tokenizer file is missing, unreadable, truncated, corrupted or of an unknown version."""


@dataclass(frozen=True, eq=False)
class EncodedText:
    """A text encoded for training and evaluation: three arrays of equal length.

    ids          int32  the token ids
    byte_counts  uint8 (int32 if some token is longer than 255 bytes): how many
                 UTF-8 bytes of the ORIGINAL text each token stands for. Their sum is
                 len(text.encode("utf-8")), even when a char tokenizer replaced an
                 unseen character by <unk> (the <unk> carries the byte length of the
                 character it replaced), so bits-per-byte counts every byte once.
    word_starts  bool   True where the token begins a pre-split chunk ("word") of
                 the tokenizer's pattern; with pattern "none" only position 0.

    Example (char tokenizer, pattern gpt4, text "hi yo"):
        chunks "hi", " yo" -> word_starts [T, F, T, F, F], byte_counts [1, 1, 1, 1, 1]
    """

    ids: np.ndarray
    byte_counts: np.ndarray
    word_starts: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.byte_counts) != n or len(self.word_starts) != n:
            raise ValueError(
                f"EncodedText arrays differ in length: ids {n}, byte_counts "
                f"{len(self.byte_counts)}, word_starts {len(self.word_starts)}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_bytes(self) -> int:
        """UTF-8 bytes of the original text (the denominator of bits-per-byte)."""
        return int(self.byte_counts.sum(dtype=np.int64))


# ---------------------------------------------------------------------------
# small pure helpers


def utf8_bytes(text: str) -> bytes:
    """The UTF-8 encoding of text, or a clear ValueError for a lone surrogate.

    utf8_bytes("é") -> b"\\xc3\\xa9";  utf8_bytes("a\\ud800") -> ValueError (index 1)

    Python strings may hold lone surrogates (from JSON "\\ud800" escapes or
    surrogateescape decoding); they have no UTF-8 form, so no tokenizer can
    round-trip them. Refuse them here rather than deep inside an encoder.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected text as str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise ValueError(
            f"text contains a lone surrogate U+{ord(bad):04X} at index {err.start}; "
            "it has no UTF-8 form and cannot be tokenized"
        ) from None


def split_chunks(text: str, pattern: str) -> list[str]:
    """Cut text into pre-split chunks with a named pattern ("none": one chunk).

    split_chunks("Hello world!!", "gpt4") -> ["Hello", " world", "!!"]
    split_chunks("Hello world!!", "none") -> ["Hello world!!"]
    split_chunks("", "none") -> []
    """
    if pattern == "none":
        return [text] if text else []
    return _COMPILED[pattern].findall(text)


def chunk_start_mask(chunk_lengths: np.ndarray, total: int) -> np.ndarray:
    """A bool mask of length total, True where each chunk begins.

    chunk_start_mask(np.array([2, 3]), 5) -> [True, False, True, False, False]
    """
    mask = np.zeros(total, dtype=bool)
    if len(chunk_lengths):
        starts = np.cumsum(chunk_lengths) - chunk_lengths
        mask[starts] = True
    return mask


def check_pattern(pattern: str) -> str:
    if pattern not in PATTERN_NAMES:
        raise ValueError(f"unknown split pattern {pattern!r}; expected one of {', '.join(PATTERN_NAMES)}")
    return pattern


def check_special_tokens(special_tokens: Iterable[str]) -> list[str]:
    """Special tokens must be distinct, non-empty strings (order = id order)."""
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a list of strings, not one string")
    tokens = list(special_tokens)
    for t in tokens:
        if not isinstance(t, str) or not t:
            raise ValueError(f"special tokens must be non-empty strings, got {t!r}")
        utf8_bytes(t)
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"special tokens must be distinct, got {tokens}")
    return tokens


def special_splitter(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex that finds special tokens, leftmost first and longest among those.

    With "<s>" and "<s>x" both special, "a<s>xb" splits as "a", "<s>x", "b": the
    alternatives are tried longest first. (Hugging Face's added-token matcher is
    leftmost-longest as well, which the HF export relies on.)
    """
    tokens = sorted(special_tokens, key=len, reverse=True)
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(t) for t in tokens))


def canonical_json(obj: Any) -> str:
    """One fixed serialization (sorted keys, no spaces, ASCII) for fingerprints."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def readable_json(obj: dict[str, Any]) -> str:
    """Pretty JSON for people: one top-level key per line, one list item per line.

    readable_json({"merges": [[1, 2], [3, 4]]}) ->
        {
          "merges": [
            [1, 2],
            [3, 4]
          ]
        }
    """
    lines = ["{"]
    items = list(obj.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        head = f"  {json.dumps(key)}: "
        if isinstance(value, list) and value:
            body = ",\n".join("    " + json.dumps(v, ensure_ascii=False, separators=(", ", ": ")) for v in value)
            lines.append(f"{head}[\n{body}\n  ]{comma}")
        elif isinstance(value, dict) and value:
            body = ",\n".join(
                f"    {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()
            )
            lines.append(f"{head}{{\n{body}\n  }}{comma}")
        else:
            lines.append(f"{head}{json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# the protocol


class Tokenizer(ABC):
    """Base class of the char and bpe tokenizers.

    Ids 0 .. base_size-1 are the ordinary vocabulary of the concrete kind; the
    special tokens follow in the order given. Subclasses implement the ordinary
    part (_encode_ordinary, _ordinary_bytes, _encode_training, the file fields).
    """

    kind: ClassVar[str]
    _registry: ClassVar[dict[str, type["Tokenizer"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._registry[cls.kind] = cls

    def __init__(self, base_size: int, pattern: str, special_tokens: Iterable[str]) -> None:
        self.pattern = check_pattern(pattern)
        tokens = check_special_tokens(special_tokens)
        self._base_size = base_size
        self._special_to_id = {t: base_size + i for i, t in enumerate(tokens)}
        self._id_to_special = {i: t for t, i in self._special_to_id.items()}
        self._special_re = special_splitter(tokens)

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: Any, train_text: str) -> "Tokenizer":
        """The registry's constructor (gptexp.components): this kind made from its spec section
        (trained on the training split, or read from the file the spec names)."""

    # -- sizes and vocabulary ------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._base_size + len(self._special_to_id)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_to_id)

    def token_bytes(self, i: int) -> bytes:
        """The UTF-8 bytes token i stands for; b"" for a special token."""
        i = self._check_id(i)
        if i >= self._base_size:
            return b""
        return self._ordinary_bytes(i)

    def _check_id(self, i: Any) -> int:
        try:
            j = int(i)
        except (TypeError, ValueError):
            raise TypeError(f"token ids must be integers, got {i!r}") from None
        if not 0 <= j < self.vocab_size:
            raise ValueError(f"token id {j} is outside the vocabulary (size {self.vocab_size})")
        return j

    # -- encode / decode -------------------------------------------------------

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> ids. Literal special-token text (e.g. "<eos>") is ordinary text
        unless allow_special=True; then the text is first cut at special tokens
        (leftmost, longest match) and each one becomes its id."""
        utf8_bytes(text)  # refuse lone surrogates up front, with a clear message
        if not allow_special or self._special_re is None:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in self._special_re.finditer(text):
            ids.extend(self._encode_ordinary(text[start : m.start()]))
            ids.append(self._special_to_id[m.group()])
            start = m.end()
        ids.extend(self._encode_ordinary(text[start:]))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Special tokens decode to their own text ("<eos>"); byte
        sequences that are not valid UTF-8 decode with errors="replace"."""
        parts: list[str] = []
        run: list[bytes] = []
        for i in ids:
            i = self._check_id(i)
            if i >= self._base_size:
                parts.append(b"".join(run).decode("utf-8", errors="replace"))
                run = []
                parts.append(self._id_to_special[i])
            else:
                run.append(self._ordinary_bytes(i))
        parts.append(b"".join(run).decode("utf-8", errors="replace"))
        return "".join(parts)

    def encode_for_training(self, text: str) -> EncodedText:
        """Encode text as ordinary text (no special tokens) with per-token byte
        counts and word starts; see EncodedText."""
        utf8_bytes(text)
        return self._encode_training(text)

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]: ...

    @abstractmethod
    def _ordinary_bytes(self, i: int) -> bytes: ...

    @abstractmethod
    def _encode_training(self, text: str) -> EncodedText: ...

    # -- the file format ---------------------------------------------------------

    @abstractmethod
    def _content(self) -> dict[str, Any]:
        """The kind-specific fields of the saved file."""

    @classmethod
    @abstractmethod
    def _from_content(cls, d: dict[str, Any], pattern: str, special_tokens: list[str], where: str) -> "Tokenizer":
        """Validate the kind-specific fields (raise TokenizerFileError) and build."""

    _CONTENT_KEYS: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The saved file as a dict (without the optional readable view)."""
        return {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "kind": self.kind,
            "pattern": self.pattern,
            "vocab_size": self.vocab_size,
            "special_tokens": self.special_tokens,
            **self._content(),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "<dict>") -> "Tokenizer":
        """Build a tokenizer (char or bpe, from d["kind"]) from a to_dict() result.

        Raises TokenizerFileError naming `source` if anything is missing or wrong."""
        _ensure_kinds_registered()
        where = source
        if not isinstance(d, dict):
            raise TokenizerFileError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FILE_FORMAT:
            raise TokenizerFileError(f"{where}: not a gptexp tokenizer file (\"format\" is not {FILE_FORMAT!r})")
        version = d.get("version")
        if version != FILE_VERSION:
            raise TokenizerFileError(
                f"{where}: unsupported tokenizer file version {version!r} (this gptexp reads version {FILE_VERSION})"
            )
        kind = d.get("kind")
        if kind not in cls._registry:
            raise TokenizerFileError(f"{where}: unknown tokenizer kind {kind!r} (expected one of {sorted(cls._registry)})")
        impl = cls._registry[kind]
        if cls is not Tokenizer and impl is not cls:
            raise TokenizerFileError(f"{where}: holds a {kind} tokenizer, not a {cls.kind} tokenizer")
        allowed = {"format", "version", "kind", "pattern", "vocab_size", "special_tokens", "vocab_view", *impl._CONTENT_KEYS}
        missing = sorted(allowed - {"vocab_view"} - d.keys())
        if missing:
            raise TokenizerFileError(f"{where}: missing field(s) {', '.join(missing)}")
        unknown = sorted(d.keys() - allowed)
        if unknown:
            raise TokenizerFileError(f"{where}: unknown field(s) {', '.join(unknown)}")
        pattern = d["pattern"]
        if pattern not in PATTERN_NAMES:
            raise TokenizerFileError(f"{where}: \"pattern\" must be one of {', '.join(PATTERN_NAMES)}, got {pattern!r}")
        specials = d["special_tokens"]
        if not isinstance(specials, dict) or not all(
            isinstance(k, str) and k and type(v) is int for k, v in specials.items()
        ):
            raise TokenizerFileError(f"{where}: \"special_tokens\" must map non-empty strings to integer ids")
        try:
            tok = impl._from_content(d, pattern, list(specials), where)
        except TokenizerFileError:
            raise
        except (ValueError, TypeError) as err:
            raise TokenizerFileError(f"{where}: {err}") from None
        if tok.special_tokens != specials:
            raise TokenizerFileError(
                f"{where}: special token ids {specials} do not follow the vocabulary "
                f"(expected {tok.special_tokens})"
            )
        if d["vocab_size"] != tok.vocab_size or type(d["vocab_size"]) is not int:
            raise TokenizerFileError(f"{where}: \"vocab_size\" is {d['vocab_size']!r} but the file defines {tok.vocab_size} tokens")
        return tok

    def vocab_view(self) -> dict[str, str]:
        """id -> readable token text, for people reading the file (bytes that are not
        valid UTF-8 on their own are shown as \\x.. escapes)."""
        view = {}
        for i in range(self.vocab_size):
            if i in self._id_to_special:
                view[str(i)] = self._id_to_special[i]
            else:
                view[str(i)] = self._ordinary_bytes(i).decode("utf-8", errors="backslashreplace")
        return view

    def save(self, path: str | Path, readable_vocab: bool = True) -> None:
        """Write the JSON file (atomically: temp file + rename)."""
        path = Path(path)
        d = self.to_dict()
        if readable_vocab:
            d["vocab_view"] = self.vocab_view()
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(readable_json(d), encoding="utf-8")
        tmp.replace(path)

    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of to_dict(): equal for equal tokenizers,
        independent of formatting and of the optional readable view."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, pattern={self.pattern!r}, special_tokens={list(self._special_to_id)})"


def _ensure_kinds_registered() -> None:
    # the concrete kinds register themselves when imported
    from . import bpe, char, hf_file  # noqa: F401


CUSTOM_KIND = "custom"  # a file holding a custom tokenizer: {"target": "pkg.mod:Name", "state": to_dict()}


def _custom_file(tok: Any) -> dict[str, Any]:
    cls = type(tok)
    return {"format": FILE_FORMAT, "version": FILE_VERSION, "kind": CUSTOM_KIND,
            "target": f"{cls.__module__}:{cls.__qualname__}", "state": tok.to_dict()}


def tokenizer_fingerprint(tok: Any) -> str:
    """sha256 of what defines any tokenizer (Tokenizer.fingerprint; for a custom one its import
    path and to_dict() state): equal tokenizers encode alike, so encoded caches key on it."""
    if isinstance(tok, Tokenizer):
        return tok.fingerprint()
    return hashlib.sha256(canonical_json(_custom_file(tok)).encode("utf-8")).hexdigest()


def save_tokenizer(tok: Any, path: str | Path) -> None:
    """Write any tokenizer as a gptexp tokenizer file: a built-in kind as itself, a custom class
    (gptexp.protocols.TokenizerLike) as its import path and its to_dict() state."""
    if isinstance(tok, Tokenizer):
        tok.save(path)
        return
    Path(path).write_text(readable_json(_custom_file(tok)), encoding="utf-8")


def _load_custom(d: dict[str, Any], where: str) -> Any:
    from gptexp.components import ComponentError, import_target

    try:
        cls = import_target(d.get("target"))
        return cls.from_dict(d.get("state"))
    except ComponentError as err:
        raise TokenizerFileError(f"{where}: {err}") from None
    except (ValueError, TypeError, KeyError) as err:
        raise TokenizerFileError(f"{where}: the custom tokenizer {d.get('target')} cannot load its state: {err}") from None


def tokenizer_file_refusal(refused: FileRefused) -> str:
    """The one-line message for a tokenizer file that cannot be read (FIFOs and devices included)."""
    return refusal_message(refused, missing="{path}: no such file", directory="{path}: is a directory, not a tokenizer file",
                           too_large="{path}: {size} bytes, more than the "
                                     f"{MAX_TOKENIZER_FILE_BYTES >> 20} MiB a tokenizer file may have")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer file written by Tokenizer.save (char or bpe).

    Raises TokenizerFileError naming the file if it is missing, unreadable, not
    JSON, of another version, or has missing/mistyped/inconsistent fields."""
    path = Path(path)
    where = str(path)
    try:
        raw = read_regular(path, MAX_TOKENIZER_FILE_BYTES)
    except FileRefused as refused:
        raise TokenizerFileError(tokenizer_file_refusal(refused)) from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TokenizerFileError(f"{where}: not a tokenizer file (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise TokenizerFileError(
            f"{where}: not valid JSON (truncated or corrupted?): {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    except RecursionError:
        raise TokenizerFileError(f"{where}: not a tokenizer file (JSON nested too deeply)") from None
    if isinstance(d, dict) and d.get("format") == FILE_FORMAT and d.get("version") == FILE_VERSION and d.get("kind") == CUSTOM_KIND:
        return _load_custom(d, where)
    return Tokenizer.from_dict(d, source=where)
