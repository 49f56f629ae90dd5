"""Cutting a corpus stream into splits and into pieces that can be encoded independently.

Splits are byte ranges of the joined corpus (train first, then test, then validation at the
end), moved forward to the next character boundary. Each split is then cut into pieces of about
`target` characters for parallel work. A piece boundary must not change a single token id or
word start: it may lie neither inside a UTF-8 character nor inside a pre-split chunk ("word"),
nor where the split regex would look across it. The boundaries used are, first, the places where
a line that ends in a non-space character is followed by a letter:

    "...the end.\\nNext line"   ->   "...the end.\\n" | "Next line"

and where no such line break comes soon enough (minified JSON or JavaScript, long lines of code:
a piece would otherwise grow without bound, and a worker's memory with it), the end of a run of
letters or of digits that is followed by another character:

    '{"key":"value","n":12}'   ->   '{"key' | '":"value' | '","n' | '":12' | '}'   (3 to 4 characters a piece)

Both shipped patterns (gpt2, gpt4) end a chunk at such a newline whatever follows, and no chunk
starts before it and ends after it. A run of letters always ends a chunk (every alternative that
matches a letter stops at the first non-letter) and so does a run of digits (gpt4 groups digits
by three from the start of the run, which the cut never splits); neither pattern has a
look-behind, and the chunk before such a cut is matched the same when the text ends there. So
encoding the pieces and concatenating the ids gives exactly the ids of the whole split
(tests/test_data_pieces.py checks it on random text). With pattern "none" the whole split is one
chunk: it is one piece.
"""

from __future__ import annotations

import codecs
from typing import Iterable, Iterator

import regex

SPLIT_ORDER = ("train", "test", "val")  # the order of the splits in the corpus stream
_SAFE_CUT = regex.compile(r"\S\n\p{L}")  # cut after the newline
_RUN_END = regex.compile(r"\p{L}(?=\P{L})|\p{N}(?=\P{N})")  # cut after the letter or digit (the next char must be there)


def split_byte_ranges(n_bytes: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Nominal byte ranges (before moving to character boundaries) of each split.

    split_byte_ranges(10, 0.2, 0.1) -> {"train": (0, 7), "test": (7, 8), "val": (8, 10)}
    """
    n_val = int(round(n_bytes * val_fraction))
    n_test = int(round(n_bytes * test_fraction))
    train_end = n_bytes - n_val - n_test
    return {"train": (0, train_end), "test": (train_end, train_end + n_test), "val": (train_end + n_test, n_bytes)}


def split_stream(blocks: Iterable[bytes], cuts: list[int]) -> Iterator[tuple[int, bytes]]:
    """(part number, bytes) in stream order, parts separated at the byte offsets `cuts` (ascending).

    A cut that falls inside a UTF-8 character moves forward to the character's end, so every part
    decodes on its own. split_stream([b"ab\\xc3\\xa9cd"], [3]) -> (0, b"ab\\xc3\\xa9"), (1, b"cd")
    """
    part = 0  # parts before `part` are finished; cuts[part] ends the current one
    offset = 0  # stream offset of block[0]
    for block in blocks:
        start = 0
        while start < len(block):
            if part == len(cuts) or cuts[part] >= offset + len(block):
                yield part, block[start:]
                break
            at = max(cuts[part] - offset, start)
            while at < len(block) and 0x80 <= block[at] < 0xC0:  # not inside a character
                at += 1
            if at == len(block):  # the character continues in the next block: so does the part
                yield part, block[start:]
                cuts = [*cuts[:part], offset + len(block), *cuts[part + 1:]]
                break
            if at > start:
                yield part, block[start:at]
            start = at
            part += 1
        offset += len(block)


def decode_stream(blocks: Iterable[bytes]) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for block in blocks:
        text = decoder.decode(block)
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def last_safe_cut(text: str) -> int:
    """The offset of the last safe piece boundary in text, or 0 if there is none.

    last_safe_cut("ab.\\ncd\\nef") -> 7   ("ab.\\ncd\\n" | "ef")
    """
    end = len(text)
    while True:
        i = text.rfind("\n", 1, end)
        if i < 1:
            return 0
        if _SAFE_CUT.match(text, i - 1):
            return i + 1
        end = i


def cut_pieces(texts: Iterable[str], target_chars: int, pattern: str, max_chars: int | None = None) -> Iterator[str]:
    """Join a split's text blocks and re-cut them into pieces at the first safe line break after
    each target_chars characters; where none comes by max_chars (default 1.25 × target_chars), at the
    first end of a run of letters or digits after target_chars. A piece is longer only where the
    text has neither (megabytes of whitespace or punctuation alone)."""
    if pattern == "none":
        whole = "".join(texts)
        if whole:
            yield whole
        return
    limit = max(max_chars or target_chars + target_chars // 4, target_chars + 1)
    buffer = ""
    searched = run_searched = 0  # no line-break cut / run-end cut starts before these offsets
    for text in texts:
        buffer += text
        while len(buffer) > target_chars:
            match = _SAFE_CUT.search(buffer, max(target_chars - 1, searched), limit + 1)
            if match is not None:
                cut = match.start() + 2
            elif len(buffer) > limit:
                run = _RUN_END.search(buffer, max(target_chars - 1, run_searched))
                if run is None:
                    searched, run_searched = max(len(buffer) - 2, 0), max(len(buffer) - 1, 0)
                    break
                cut = run.start() + 1
            else:
                searched = max(len(buffer) - 2, 0)
                break
            yield buffer[:cut]
            buffer, searched, run_searched = buffer[cut:], 0, 0
    if buffer:
        yield buffer
