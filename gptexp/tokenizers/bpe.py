"""Byte-level BPE: ids 0..255 are the bytes, merge i makes id 256 + i, the
special tokens come after the merges.

Training (learn_merges) works on the unique pre-split chunks of the corpus,
each weighted by how often it occurs, and is incremental: after a merge only
the places where the merged pair occurs are touched. Every merge is a most
frequent pair at its turn; TIE RULE: among the pairs with the maximal count
the smallest (a, b) pair of ids wins (compared as tuples), so training is
deterministic and independent of dict or corpus order.

Encoding cuts the text with the same pattern and, inside each chunk, applies
the merges lowest rank first (as training did), caching chunk -> ids.
"""

from __future__ import annotations

import heapq
import sys
from array import array
from collections import Counter, defaultdict
from itertools import chain, repeat
from operator import add
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .base import (
    DEFAULT_SPECIAL_TOKENS,
    EncodedText,
    Tokenizer,
    TokenizerFileError,
    check_pattern,
    check_special_tokens,
    chunk_start_mask,
    split_chunks,
    utf8_bytes,
)

Progress = Callable[[int, int], None]

# Chunks longer than this (only common with pattern "none") are merged with a
# sweep over the merge table instead of the per-chunk min search, and not cached.
_LONG_CHUNK = 256


# ---------------------------------------------------------------------------
# small pure helpers (the reference semantics; the fast paths below agree with them)


def pair_counts(ids: list[int], counts: dict[tuple[int, int], int] | None = None, weight: int = 1) -> dict[tuple[int, int], int]:
    """Count adjacent pairs (overlapping ones too), each occurrence adding weight.

    pair_counts([1, 2, 3, 1, 2]) -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    pair_counts([7, 7, 7]) -> {(7, 7): 2}
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of pair by new_id, scanning left to right.

    merge_pair([1, 2, 3, 1, 2], (1, 2), 9) -> [9, 3, 9]
    merge_pair([7, 7, 7], (7, 7), 9) -> [9, 7]      # occurrences never overlap
    """
    out: list[int] = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def chunk_counts(text: str, pattern: str) -> dict[bytes, int]:
    """Unique pre-split chunks of text (as UTF-8 bytes) -> how often each occurs.

    chunk_counts("to be or not to be", "gpt4")
        -> {b"to": 1, b" be": 2, b" or": 1, b" not": 1, b" to": 1}
    """
    utf8_bytes(text)
    return {chunk.encode("utf-8"): n for chunk, n in Counter(split_chunks(text, pattern)).items()}


# ---------------------------------------------------------------------------
# training


def flatten_chunks(counts: Mapping[bytes, int]) -> tuple[array, array]:
    """All chunks' bytes in one array, each chunk followed by a -1 sentinel, and the
    chunk's frequency at every position (so a pair's weight is its left symbol's).

    flatten_chunks({b"ab": 3, b"c": 1}) -> ([-1, 97, 98, -1, 99, -1], [0, 3, 3, 3, 1, 1])

    Typed arrays, not lists: a list spends 8 bytes of pointer plus a 28-byte int object on most
    entries (benchmarks/scale.py's 1 GB corpus has 1.6 million distinct chunks).
    """
    sym = array("i", [-1])
    weight = array("q", [0])
    for chunk, freq in counts.items():
        sym.extend(chunk)
        sym.append(-1)
        weight.extend(repeat(freq, len(chunk) + 1))
    return sym, weight


def _positions() -> array:
    return array("i")


def learn_merges(counts: Mapping[bytes, int], num_merges: int, progress: Progress | None = None) -> list[tuple[int, int]]:
    """Learn up to num_merges merges from chunk -> frequency (stops early if no pair is left).

    learn_merges({b"aaab": 1}, 2) -> [(97, 97), (97, 98)]
        counts (a,a)=2 (a,b)=1: merge (97, 97) -> 256; the chunk is now [256, 97, 98]
        counts (256,a)=1 (a,b)=1: a tie, and the smaller pair (97, 98) wins

    How it stays fast: every chunk's symbols live in one flat array with
    next/previous links (a merge unlinks the right symbol), separated by -1
    sentinels so pairs never span chunks. `where[pair]` lists the positions at
    which the pair was seen (entries go stale and are re-checked when used), and
    a heap with lazy invalidation yields the best pair. A merge touches only its
    occurrences and their two neighbours, adjusting the counts of the pairs it
    destroys and creates, so the counts are always exact.
    """
    if num_merges <= 0:
        return []
    # Pair (a, b) is the int a << shift | b: cheaper to hash than a tuple, and
    # ordering the ints orders the tuples.
    max_id = 256 + num_merges
    shift = max(max_id.bit_length(), 9)
    low = (1 << shift) - 1
    key_bits = 2 * shift
    key_mask = (1 << key_bits) - 1

    # Flat typed arrays (4 or 8 bytes an entry) rather than lists of int objects (~36): on the
    # 100 MB benchmark corpus (3.5 MB of distinct chunk bytes) 172 MB instead of 540 MB.
    sym, weight = flatten_chunks(counts)
    size = len(sym)
    nxt = array("i", range(1, size + 1))
    prv = array("i", range(-1, size - 1))

    pair_count: defaultdict[int, int] = defaultdict(int)
    where: defaultdict[int, array] = defaultdict(_positions)
    for p in range(1, size - 1):
        a = sym[p]
        b = sym[p + 1]
        if a >= 0 and b >= 0:
            k = a << shift | b
            pair_count[k] += weight[p]
            where[k].append(p)

    # heap entries: -count << key_bits | key; smallest entry = max count, then min pair
    heap = [(-c << key_bits) | k for k, c in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    new = 256
    while len(merges) < num_merges and heap:
        entry = heapq.heappop(heap)
        count = -(entry >> key_bits)
        k = entry & key_mask
        real = pair_count.get(k, 0)
        if real != count:
            # stale entry: counts only shrink behind the heap's back (growth is
            # pushed when it happens), so re-queue with the true, smaller count
            if 0 < real < count:
                heapq.heappush(heap, (-real << key_bits) | k)
            continue
        a = k >> shift
        b = k & low
        positions = where.pop(k)
        if a == b:
            positions = sorted(positions)  # "aaaa" must merge left to right: (aa)(aa), not a(aa)a
        grown: set[int] = set()
        for p in positions:
            if sym[p] != a:
                continue
            q = nxt[p]
            if sym[q] != b:
                continue
            f = weight[p]
            o = prv[p]
            x = sym[o]
            if x >= 0:
                pair_count[x << shift | a] -= f
                kk = x << shift | new
                pair_count[kk] += f
                where[kk].append(o)
                grown.add(kk)
            r = nxt[q]
            y = sym[r]
            if y >= 0:
                pair_count[b << shift | y] -= f
                kk = new << shift | y
                pair_count[kk] += f
                where[kk].append(p)
                grown.add(kk)
            sym[p] = new
            sym[q] = -2  # dead: never equals a real id
            nxt[p] = r
            prv[r] = p
        del pair_count[k]
        for kk in grown:
            c = pair_count[kk]
            if c > 0:
                heapq.heappush(heap, (-c << key_bits) | kk)
        merges.append((a, b))
        new += 1
        if progress is not None:
            progress(len(merges), num_merges)
    return merges


def train_bpe(
    text: str,
    vocab_size: int = 2048,
    pattern: str = "gpt4",
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    progress: Progress | None = None,
) -> "BPETokenizer":
    """Train a byte-level BPE tokenizer whose vocab_size counts the 256 bytes,
    the merges and the special tokens. If the text runs out of pairs first,
    training stops early and the tokenizer is smaller than asked for."""
    check_pattern(pattern)
    return train_bpe_from_counts(chunk_counts(text, pattern), vocab_size, pattern, special_tokens, progress)


def train_bpe_from_counts(
    counts: Mapping[bytes, int],
    vocab_size: int = 2048,
    pattern: str = "gpt4",
    special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    progress: Progress | None = None,
) -> "BPETokenizer":
    """train_bpe from chunk counts (chunk_counts of the text, or their sum over pieces of it: the
    counts of a text cut at chunk boundaries add up, so streamed training gives the same merges)."""
    check_pattern(pattern)
    specials = check_special_tokens(special_tokens)
    if type(vocab_size) is not int and not isinstance(vocab_size, np.integer):
        raise TypeError(f"vocab_size must be an int, got {vocab_size!r}")
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least "
            f"256 byte tokens + {len(specials)} special tokens = {minimum}"
        )
    merges = learn_merges(counts, int(vocab_size) - minimum, progress)
    return BPETokenizer(merges, pattern=pattern, special_tokens=specials)


# ---------------------------------------------------------------------------
# the tokenizer


class BPETokenizer(Tokenizer):
    kind = "bpe"
    _CONTENT_KEYS = ("merges",)

    def __init__(
        self,
        merges: Iterable[tuple[int, int]],
        pattern: str = "gpt4",
        special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
    ) -> None:
        merges = [(int(a), int(b)) for a, b in merges]
        if 256 + len(merges) > sys.maxunicode + 1:
            raise ValueError(f"at most {sys.maxunicode + 1 - 256} merges are supported, got {len(merges)}")
        super().__init__(256 + len(merges), pattern, special_tokens)
        self._merges = merges
        vocab = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merge {i} ({a}, {b}) uses an id that does not exist yet (ids < {256 + i})")
            vocab.append(vocab[a] + vocab[b])
        self._vocab = vocab
        # The encoder works on a str with one character per token (chr(id)), so
        # that str.replace does the left-to-right merging in C.
        self._merge_text = [chr(a) + chr(b) for a, b in merges]
        self._pair_rank = {m: 256 + i for i, m in enumerate(self._merge_text)}
        self._cache: dict[str, tuple[int, ...]] = {}
        lengths = np.array([len(t) for t in vocab] + [0] * len(self._special_to_id), dtype=np.int32)
        self._token_lengths = lengths.astype(np.uint8) if lengths.max(initial=0) <= 255 else lengths

    @property
    def merges(self) -> list[tuple[int, int]]:
        return list(self._merges)

    def _ordinary_bytes(self, i: int) -> bytes:
        return self._vocab[i]

    # -- encoding --------------------------------------------------------------

    def _merge_chunk(self, chunk: str) -> tuple[int, ...]:
        """The ids of one pre-split chunk: its bytes, merged lowest rank first.

        With merges [(104, 105)] ("h"+"i" -> 256): "hih" -> (256, 104)

        Each round finds the lowest-ranked pair present and merges all its
        occurrences left to right; a merge only creates pairs of higher rank,
        so this applies exactly the merges training would have applied.
        """
        s = chunk.encode("utf-8").decode("latin-1")  # one char per byte, chr(b) == b
        if len(s) > _LONG_CHUNK:
            return self._merge_long(s)
        rank = self._pair_rank
        nothing = 1 << 62
        merge_text = self._merge_text
        while len(s) > 1:
            best = min(map(rank.get, map(add, s, s[1:]), repeat(nothing)))
            if best == nothing:
                break
            s = s.replace(merge_text[best - 256], chr(best))
        return tuple(map(ord, s))

    def _merge_long(self, s: str) -> tuple[int, ...]:
        # Same result as _merge_chunk (merges applied in rank order, each left to
        # right), but O(#merges) C-level scans instead of O(len) Python work per round.
        for i, m in enumerate(self._merge_text):
            if m in s:
                s = s.replace(m, chr(256 + i))
        return tuple(map(ord, s))

    def _chunk_ids(self, chunks: list[str]) -> list[tuple[int, ...]]:
        """The ids of each chunk, through the cache (long chunks are not cached)."""
        cache = self._cache
        long: dict[str, tuple[int, ...]] = {}
        for c in set(chunks).difference(cache):
            if len(c) > _LONG_CHUNK:
                long[c] = self._merge_chunk(c)
            else:
                cache[c] = self._merge_chunk(c)
        if long:
            return [long[c] if c in long else cache[c] for c in chunks]
        return list(map(cache.__getitem__, chunks))

    def _encode_ordinary(self, text: str) -> list[int]:
        return list(chain.from_iterable(self._chunk_ids(split_chunks(text, self.pattern))))

    def _encode_training(self, text: str) -> EncodedText:
        per_chunk = self._chunk_ids(split_chunks(text, self.pattern))
        lengths = np.fromiter(map(len, per_chunk), dtype=np.int64, count=len(per_chunk))
        total = int(lengths.sum())
        ids = np.fromiter(chain.from_iterable(per_chunk), dtype=np.int32, count=total)
        return EncodedText(
            ids=ids,
            byte_counts=self._token_lengths[ids],
            word_starts=chunk_start_mask(lengths, total),
        )

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cache_size(self) -> int:
        """Chunks in the encode cache (a long-running encoder clears it now and then)."""
        return len(self._cache)

    # -- file format -------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: Any, train_text: str) -> BPETokenizer:
        return train_bpe(train_text, vocab_size=spec.vocab_size, pattern=spec.pattern, special_tokens=spec.special_tokens)

    def _content(self) -> dict[str, Any]:
        return {"merges": [[a, b] for a, b in self._merges]}

    @classmethod
    def _from_content(cls, d: dict[str, Any], pattern: str, special_tokens: list[str], where: str) -> "BPETokenizer":
        merges = d["merges"]
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(type(x) is int for x in m) for m in merges
        ):
            raise TokenizerFileError(f"{where}: \"merges\" must be a list of [int, int] pairs")
        return cls([tuple(m) for m in merges], pattern=pattern, special_tokens=special_tokens)
