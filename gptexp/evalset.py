"""The frozen evaluation set: which words of a text are hidden, fixed once, shared by every arm.

A study scores every arm (char or BPE, any masking regime) on exactly the same bytes. The set is
built from the text alone: the text is cut into words (the chunks of the tokenizers' split
pattern), the words into spans that fit every arm's window, and about `hidden_fraction` of each
span's words (at least one) are drawn once from the study seed. Everything is stored as UTF-8 byte
ranges of the text, so nothing depends on a tokenizer, a window, a batch size or a rank.

A hidden word containing a character that some arm cannot encode (a char tokenizer's <unk>) would
be scored on a 1-of-V guess in that arm only; such words are hidden in no arm and are counted in
`skipped_words`.

File (`evalset.json` in the study directory):
    {"format": "gptexp-evalset", "version": 1, "text_sha256": hex, "pattern": "gpt4", "seed": s,
     "hidden_fraction": 0.15, "skipped_words": n, "dropped_spans": n,
     "spans": [{"start": b, "end": b, "hidden": [[b, b], ...], "reference_tokens": [n, ...]}, ...]}
`reference_tokens` holds how many tokens of the reference (BPE) tokenizer each hidden word is,
for the one-token versus multi-token split (empty when the study has no BPE arm).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptexp.spec import SpecError
from gptexp.tokenizers import Tokenizer
from gptexp.tokenizers.base import split_chunks

EVALSET_FORMAT = "gptexp-evalset"
EVALSET_VERSION = 1


class EvalSetError(SpecError):
    """An evaluation set file that does not belong to this text, or cannot be read (bad input: exit 2)."""


@dataclass
class Span:
    start: int  # byte offset of the span in the text
    end: int
    hidden: list[tuple[int, int]]  # byte ranges of the hidden words, ascending, inside [start, end)
    reference_tokens: list[int] = field(default_factory=list)


@dataclass
class EvalSet:
    text_sha256: str
    pattern: str
    seed: int
    hidden_fraction: float
    spans: list[Span]
    skipped_words: int = 0  # drawn words hidden in no arm: some arm cannot encode a character
    dropped_spans: int = 0  # single words longer than some arm's window (never scored)

    @property
    def hidden_words(self) -> int:
        return sum(len(span.hidden) for span in self.spans)

    @property
    def hidden_bytes(self) -> int:
        return sum(end - start for span in self.spans for start, end in span.hidden)

    def to_dict(self) -> dict[str, Any]:
        return {"format": EVALSET_FORMAT, "version": EVALSET_VERSION, "text_sha256": self.text_sha256,
                "pattern": self.pattern, "seed": self.seed, "hidden_fraction": self.hidden_fraction,
                "skipped_words": self.skipped_words, "dropped_spans": self.dropped_spans,
                "spans": [{"start": s.start, "end": s.end, "hidden": [list(h) for h in s.hidden],
                           "reference_tokens": s.reference_tokens} for s in self.spans]}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, text: str | None = None) -> EvalSet:
        """Read an evaluation set; with `text`, check that it was built from that text."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EvalSetError(f"{path}: cannot read the evaluation set ({error})") from None
        if not isinstance(raw, dict) or raw.get("format") != EVALSET_FORMAT or raw.get("version") != EVALSET_VERSION:
            raise EvalSetError(f"{path}: not a {EVALSET_FORMAT} file of version {EVALSET_VERSION}")
        evalset = cls(raw["text_sha256"], raw["pattern"], int(raw["seed"]), float(raw["hidden_fraction"]),
                      [Span(int(s["start"]), int(s["end"]), [(int(a), int(b)) for a, b in s["hidden"]],
                            [int(n) for n in s.get("reference_tokens", [])]) for s in raw["spans"]],
                      int(raw.get("skipped_words", 0)), int(raw.get("dropped_spans", 0)))
        if text is not None and sha256_text(text) != evalset.text_sha256:
            raise EvalSetError(f"{path}: was built from another text (sha256 differs)")
        return evalset


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Word:
    """One chunk of the text: its byte range and its text."""

    start: int
    end: int
    text: str


def text_words(text: str, pattern: str) -> list[Word]:
    """The text's chunks under `pattern`, with their byte ranges (they tile the text)."""
    words, offset = [], 0
    for chunk in split_chunks(text, pattern):
        size = len(chunk.encode("utf-8"))
        words.append(Word(offset, offset + size, chunk))
        offset += size
    return words


def encodes_cleanly(tokenizer: Tokenizer, ids: list[int]) -> bool:
    """False when the encoding holds <unk> (a character outside the vocabulary)."""
    unknown = tokenizer.special_tokens.get("<unk>")
    return unknown is None or unknown not in ids


def build_evalset(text: str, pattern: str, arms: list[tuple[Tokenizer, int]], seed: int,
                  hidden_fraction: float = 0.15, reference: Tokenizer | None = None) -> EvalSet:
    """Cut `text` into word-aligned spans that fit every arm's window and draw the hidden words.

    arms: (tokenizer, window in tokens) of every arm; a span's words, each encoded on its own (BPE
    merges never cross a chunk), fit in every arm's window. `reference` (a BPE tokenizer) counts
    the tokens of each hidden word for the one-token / multi-token split.
    """
    if not 0.0 < hidden_fraction < 1.0:
        raise ValueError(f"hidden_fraction must be in (0, 1), got {hidden_fraction}")
    words = text_words(text, pattern)
    sizes = np.array([[len(tok.encode(w.text)) for tok, _ in arms] for w in words], dtype=np.int64).reshape(len(words), len(arms))
    clean = np.array([all(encodes_cleanly(tok, tok.encode(w.text)) for tok, _ in arms) for w in words], dtype=bool)
    limits = np.array([window for _, window in arms], dtype=np.int64)

    groups: list[list[int]] = []  # word indices of each span
    current: list[int] = []
    used = np.zeros(len(arms), dtype=np.int64)
    dropped = 0
    for i in range(len(words)):
        if (sizes[i] > limits).any():  # one word longer than some window: it cannot be scored
            if current:
                groups.append(current)
            current, used = [], np.zeros(len(arms), dtype=np.int64)
            dropped += 1
            continue
        if current and (used + sizes[i] > limits).any():
            groups.append(current)
            current, used = [], np.zeros(len(arms), dtype=np.int64)
        current.append(i)
        used += sizes[i]
    if current:
        groups.append(current)

    rng = np.random.default_rng(seed)
    spans, skipped = [], 0
    for group in groups:
        candidates = [i for i in group if words[i].text.strip()]
        draws = rng.random(len(candidates))  # one draw per candidate word, in text order
        chosen = [i for i, u in zip(candidates, draws) if u < hidden_fraction]
        if not chosen and candidates:
            chosen = [candidates[int(np.argmin(draws))]]
        kept = [i for i in chosen if clean[i]]
        skipped += len(chosen) - len(kept)
        reference_tokens = [len(reference.encode(words[i].text)) for i in kept] if reference is not None else []
        spans.append(Span(words[group[0]].start, words[group[-1]].end, [(words[i].start, words[i].end) for i in kept],
                          reference_tokens))
    return EvalSet(sha256_text(text), pattern, seed, hidden_fraction, spans, skipped, dropped)


# ---------------------------------------------------------------------------------------------
# one arm's view: the tokens of each span and where its hidden words lie among them


@dataclass
class SpanTokens:
    ids: list[int]
    token_bytes: list[int]  # UTF-8 bytes each token stands for
    words: list[tuple[int, int]]  # token range [first, last) of each hidden word, in the span's order
    word_bytes: list[int]  # UTF-8 bytes of each hidden word


def arm_view(evalset: EvalSet, text: str, tokenizer: Tokenizer) -> list[SpanTokens]:
    """Encode every span word by word with this arm's tokenizer; hidden words as token ranges."""
    if sha256_text(text) != evalset.text_sha256:
        raise EvalSetError("the evaluation set was built from another text")
    words = text_words(text, evalset.pattern)
    starts = np.array([w.start for w in words], dtype=np.int64)
    views = []
    for span in evalset.spans:
        first, last = np.searchsorted(starts, [span.start, span.end])
        ids: list[int] = []
        token_bytes: list[int] = []
        token_range: dict[tuple[int, int], tuple[int, int]] = {}
        for word in words[first:last]:
            word_ids = tokenizer.encode(word.text)
            token_range[(word.start, word.end)] = (len(ids), len(ids) + len(word_ids))
            ids += word_ids
            token_bytes += [len(tokenizer.token_bytes(i)) for i in word_ids]
        missing = [h for h in span.hidden if h not in token_range]
        if missing:
            raise EvalSetError(f"hidden word at bytes {missing[0]} is not a word of the text under pattern {evalset.pattern}")
        views.append(SpanTokens(ids, token_bytes, [token_range[h] for h in span.hidden],
                                [end - start for start, end in span.hidden]))
    return views
