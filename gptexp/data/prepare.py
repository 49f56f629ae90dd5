"""Preparation, in the launcher: corpus → splits → tokenizer (cached) → token cache entry.

Everything streams. The corpus is read in blocks, cut into splits by byte offsets and each split
into pieces at safe boundaries (gptexp.data.pieces), and the pieces go to a pool of processes
(all cores, or data.workers): first to count pre-split chunks for BPE training (optionally on a
sample of tokenizer.train_bytes), then to encode. Encoded pieces come back in order and are
appended to the split files of a new cache entry, which is renamed into place when complete.
Memory holds a few pieces per worker and the chunk counts, never the corpus.

Caches live under `<runs dir>/.cache/`, keyed by content: the corpus sha256, the split settings
and the tokenizer spec (tokenizers); the tokenizer fingerprint, the corpus sha256 and the split
settings (token entries). Nothing is trusted: a tokenizer file that does not load and a token
entry that does not verify (gptexp.data.tokens.verify_entry) are rebuilt, with a line saying so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from gptexp.data.corpus import CorpusInfo, corpus_sources, read_blocks, scan
from gptexp.data.pieces import SPLIT_ORDER, cut_pieces, decode_stream, split_byte_ranges, split_stream
from gptexp.data.progress import ByteProgress
from gptexp.data.tokens import (MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, SPLITS, CacheError, PreparedData,
                                bytes_follow_ids, bytes_path, ids_dtype, ids_path, verify_entry, words_path)
from gptexp.spec import ExperimentSpec

Message = Callable[[str], None]
SINGLE_PROCESS_BYTES = 4 << 20  # below this, a pool costs more than it saves
ENCODE_CACHE_CHUNKS = 500_000  # distinct chunks a BPE encoder remembers before it starts afresh


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def needs_word_starts(spec: ExperimentSpec) -> bool:
    """Word starts are stored only for objectives that mask whole words (or parts of words), and for
    custom objectives (they may use them; one bit per token)."""
    if spec.objective.kind == "custom":
        return True
    return spec.objective.kind in ("mlm", "mntp") and getattr(spec.objective, "mask_unit", "token") != "token"


# ---------------------------------------------------------------------------------------------
# the split layout: which byte ranges of which corpus make each split


class Layout:
    """The corpus (and the optional separate validation corpus) cut into the three splits."""

    def __init__(self, spec: ExperimentSpec) -> None:
        data = spec.data
        self.train_source, self.val_source = corpus_sources(data)
        self.train_info: CorpusInfo = scan(self.train_source)
        self.val_info: CorpusInfo | None = scan(self.val_source) if self.val_source else None
        n = self.train_info.n_bytes
        if self.val_source is None:
            ranges = split_byte_ranges(n, data.val_fraction, data.test_fraction)
            self.corpus_sha256 = self.train_info.sha256
            self.split_identity: dict[str, Any] = {"val_fraction": data.val_fraction, "test_fraction": data.test_fraction}
        else:
            ranges = split_byte_ranges(n, 0.0, data.test_fraction)
            # one sha256 for "this corpus with this validation corpus"
            self.corpus_sha256 = sha256_text(f"{self.train_info.sha256}:{self.val_info.sha256}")
            self.split_identity = {"val_sha256": self.val_info.sha256, "test_fraction": data.test_fraction}
        self.cuts = [ranges["train"][1], ranges["test"][1]]
        self.n_bytes = n + (self.val_info.n_bytes if self.val_info else 0)
        self.train_bytes = ranges["train"][1]

    def split_texts(self) -> Iterator[tuple[str, Iterator[str]]]:
        """(split, its text blocks) in stream order; each split's blocks must be consumed in turn."""
        parts = split_stream(read_blocks(self.train_source), self.cuts)
        for number, group in itertools.groupby(parts, key=lambda part: part[0]):
            split = SPLIT_ORDER[number] if self.val_source is None else ("train", "test")[number]
            yield split, decode_stream(block for _, block in group)
        if self.val_source is not None:
            yield "val", decode_stream(read_blocks(self.val_source))

    def pieces(self, target_chars: int, pattern: str, only: str | None = None) -> Iterator[tuple[str, str]]:
        """(split, piece) for every piece of every split (or of the split `only`), in order."""
        for split, texts in self.split_texts():  # a split not asked for is skipped unread by groupby
            if only is None or split == only:
                for piece in cut_pieces(texts, target_chars, pattern):
                    yield split, piece
                if only is not None:
                    return


# ---------------------------------------------------------------------------------------------
# the process pool: ordered results, a bounded number of pieces in flight

_WORKER: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _WORKER.clear()
    _WORKER.update(state)  # with fork (Linux) the tokenizer object is inherited, not pickled


def ordered_map(function: Callable[[Any], Any], items: Iterable[Any], workers: int, state: dict[str, Any]) -> Iterator[Any]:
    """function(item) for each item, in order, run by `workers` processes (in this one if 1)."""
    if workers <= 1:
        _init_worker(state)
        yield from map(function, items)
        return
    # fork where there is one: no re-import, and it works whatever __main__ is (stdin, a notebook).
    # The children run only numpy and regex code, nothing that needs the parent's other threads.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(state,)) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _count_piece(item: tuple[str, str]) -> tuple[int, Any]:
    """(bytes, chunk counts) of a piece for BPE, (bytes, its characters) for char."""
    from gptexp.tokenizers.bpe import chunk_counts

    _, text = item
    n_bytes = len(text.encode("utf-8"))
    if _WORKER["kind"] == "char":
        return n_bytes, "".join(set(text))
    return n_bytes, chunk_counts(text, _WORKER["pattern"])


def _encode_piece(item: tuple[str, str]) -> tuple[str, int, np.ndarray, np.ndarray | None, np.ndarray | None]:
    split, text = item
    tokenizer = _WORKER["tokenizer"]
    if getattr(tokenizer, "cache_size", 0) > ENCODE_CACHE_CHUNKS:  # bound a worker's memory on big corpora
        tokenizer.clear_cache()
    encoded = tokenizer.encode_for_training(text)
    ids = np.asarray(encoded.ids).astype(_WORKER["dtype"])
    words = np.asarray(encoded.word_starts, dtype=bool) if _WORKER["words"] else None
    counts = np.asarray(encoded.byte_counts).astype("<u4") if _WORKER["byte_counts"] else None
    return split, len(text.encode("utf-8")), ids, words, counts


# ---------------------------------------------------------------------------------------------
# the tokenizer


def tokenizer_cache_key(corpus_sha: str, spec: ExperimentSpec, split_identity: dict[str, Any]) -> str:
    # The split matters: the tokenizer is trained on the training split only. A file the spec
    # names (hf) or a custom class's code is part of the identity by content, not by name.
    identity = {"corpus": corpus_sha, "tokenizer": spec.tokenizer.model_dump(mode="json"), **split_identity}
    if spec.tokenizer.kind == "hf":
        path = Path(spec.tokenizer.path)
        identity["file"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    if spec.tokenizer.kind == "custom":
        from gptexp.components import module_origin

        identity["code"] = module_origin(spec.tokenizer.target)["sha256"]
    return sha256_text(json.dumps(identity, sort_keys=True))[:24]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """The tokenizer's own fingerprint, or the sha256 of its saved state (custom tokenizers)."""
    if callable(getattr(tokenizer, "fingerprint", None)):
        return tokenizer.fingerprint()
    return sha256_text(json.dumps(tokenizer.to_dict(), sort_keys=True, separators=(",", ":")))


def sample_rate(spec: ExperimentSpec, train_bytes: int) -> float:
    wanted = getattr(spec.tokenizer, "train_bytes", None)
    return 1.0 if wanted is None or wanted >= train_bytes else wanted / max(train_bytes, 1)


def sampled(pieces: Iterable[tuple[str, str]], rate: float) -> Iterator[tuple[str, str]]:
    """About `rate` of the pieces, spread evenly over the split (all of them when rate is 1)."""
    for n, piece in enumerate(pieces):
        if rate >= 1.0 or int((n + 1) * rate) > int(n * rate):
            yield piece


def train_tokenizer_streaming(spec: ExperimentSpec, layout: Layout, workers: int, piece_chars: int, message: Message):
    """Train the spec's tokenizer on the training split (or a sample of it), counting in parallel."""
    from gptexp.tokenizers import CharTokenizer
    from gptexp.tokenizers.bpe import train_bpe_from_counts

    tok = spec.tokenizer
    if tok.kind not in ("bpe", "char"):  # hf files are used as they are; custom ones train on the text
        from gptexp.components import build_tokenizer

        if tok.kind == "hf":
            message(f"loading hf tokenizer {tok.path}")
            return build_tokenizer(tok, "")
        message(f"training custom tokenizer {tok.target} on the training split ({layout.train_bytes:,} bytes, in memory)")
        return build_tokenizer(tok, "".join(piece for _, piece in layout.pieces(1 << 62, "none", only="train")))
    rate = sample_rate(spec, layout.train_bytes)
    what = f"{tok.kind} tokenizer" + (f" on a {rate:.1%} sample" if rate < 1.0 else "")
    state = {"kind": tok.kind, "pattern": tok.pattern}
    pieces = sampled(layout.pieces(piece_chars, tok.pattern, only="train"), rate)
    with ByteProgress(f"training {what}: counting chunks", int(layout.train_bytes * rate), message) as bar:
        if tok.kind == "char":
            chars: set[str] = set()
            for n_bytes, piece_chars_found in ordered_map(_count_piece, pieces, workers, state):
                chars.update(piece_chars_found)
                bar.advance(n_bytes)
            return CharTokenizer(sorted(chars), pattern=tok.pattern, special_tokens=tok.special_tokens)
        counts: Counter[bytes] = Counter()
        for n_bytes, piece_counts in ordered_map(_count_piece, pieces, workers, state):
            counts.update(piece_counts)
            bar.advance(n_bytes)
    message(f"learning {tok.vocab_size:,} BPE tokens from {len(counts):,} distinct chunks")
    return train_bpe_from_counts(counts, tok.vocab_size, tok.pattern, tok.special_tokens)


def cached_tokenizer(spec: ExperimentSpec, layout: Layout, cache_dir: Path, workers: int, piece_chars: int,
                     message: Message):
    from gptexp.tokenizers import TokenizerFileError, load_tokenizer
    from gptexp.tokenizers.base import save_tokenizer

    path = cache_dir / "tokenizers" / f"{tokenizer_cache_key(layout.corpus_sha256, spec, layout.split_identity)}.json"
    if path.exists():
        try:
            tokenizer = load_tokenizer(path)
            if getattr(tokenizer, "kind", "custom") in (spec.tokenizer.kind, "custom"):
                return path, tokenizer
            message(f"tokenizer cache {path} holds a {tokenizer.kind} tokenizer; training it again")
        except TokenizerFileError as error:
            message(f"tokenizer cache unreadable ({error}); training it again")
    tokenizer = train_tokenizer_streaming(spec, layout, workers, piece_chars, message)
    atomic_write(path, lambda tmp: save_tokenizer(tokenizer, tmp))
    return path, tokenizer


# ---------------------------------------------------------------------------------------------
# the token cache entry


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _SplitWriter:
    """Appends a split's ids (and packed word starts) to its files, hashing what it writes."""

    def __init__(self, entry: Path, split: str, with_words: bool, with_counts: bool) -> None:
        self.ids_file = open(ids_path(entry, split), "wb")
        self.ids_sha = hashlib.sha256()
        self.counts_file = open(bytes_path(entry, split), "wb") if with_counts else None
        self.counts_sha = hashlib.sha256()
        self.words_file = open(words_path(entry, split), "wb") if with_words else None
        self.words_sha = hashlib.sha256()
        self.carry = np.zeros(0, dtype=bool)  # word starts not yet packed (fewer than 8)
        self.tokens = 0
        self.text_bytes = 0

    def write(self, ids: np.ndarray, words: np.ndarray | None, counts: np.ndarray | None, n_bytes: int) -> None:
        data = ids.tobytes()
        self.ids_file.write(data)
        self.ids_sha.update(data)
        if self.counts_file is not None:
            data = counts.tobytes()
            self.counts_file.write(data)
            self.counts_sha.update(data)
        self.tokens += len(ids)
        self.text_bytes += n_bytes
        if self.words_file is not None:
            bits = np.concatenate((self.carry, words))
            whole = len(bits) // 8 * 8
            self._write_words(np.packbits(bits[:whole]).tobytes())
            self.carry = bits[whole:]

    def _write_words(self, data: bytes) -> None:
        self.words_file.write(data)
        self.words_sha.update(data)

    def close(self) -> dict[str, Any]:
        info: dict[str, Any] = {"tokens": self.tokens, "text_bytes": self.text_bytes, "ids_sha256": self.ids_sha.hexdigest()}
        self.ids_file.close()
        if self.counts_file is not None:
            self.counts_file.close()
            info["bytes_sha256"] = self.counts_sha.hexdigest()
        if self.words_file is not None:
            if len(self.carry):
                self._write_words(np.packbits(self.carry).tobytes())
            self.words_file.close()
            info["words_sha256"] = self.words_sha.hexdigest()
        return info


def build_entry(entry: Path, layout: Layout, tokenizer, fingerprint: str, with_words: bool, workers: int,
                piece_chars: int, message: Message) -> None:
    """Encode every split into a new entry directory, then rename it into place."""
    dtype = ids_dtype(tokenizer.vocab_size)
    entry.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".build-{entry.name}-"))
    try:
        with_counts = not bytes_follow_ids(tokenizer)
        writers = {split: _SplitWriter(build, split, with_words, with_counts) for split in SPLITS}
        state = {"tokenizer": tokenizer, "dtype": dtype.str, "words": with_words, "byte_counts": with_counts}
        # Tokenizers without a known pre-split pattern (hf, custom) encode each split in one piece.
        pattern = getattr(tokenizer, "pattern", "none")
        with ByteProgress(f"encoding with {workers} process{'es' if workers > 1 else ''}", layout.n_bytes, message) as bar:
            for split, n_bytes, ids, words, counts in ordered_map(_encode_piece, layout.pieces(piece_chars, pattern),
                                                                  workers, state):
                writers[split].write(ids, words, counts, n_bytes)
                bar.advance(n_bytes)
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "tokenizer_fingerprint": fingerprint,
                    "corpus_sha256": layout.corpus_sha256, "dtype": dtype.str, "word_starts": with_words,
                    "byte_counts": with_counts,
                    "splits": {split: writer.close() for split, writer in writers.items()}}
        (build / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _move_into_place(build, entry, fingerprint, with_words)
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _move_into_place(build: Path, entry: Path, fingerprint: str, with_words: bool) -> None:
    try:
        os.rename(build, entry)
        return
    except OSError:
        pass  # the entry exists: another process finished first, or it is a broken one
    try:
        verify_entry(entry, fingerprint, with_words)
        return  # theirs is as good as ours
    except CacheError:
        stale = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".stale-{entry.name}-"))
        os.rename(entry, stale / "entry")
        shutil.rmtree(stale, ignore_errors=True)
        os.rename(build, entry)


def default_workers(spec: ExperimentSpec, n_bytes: int) -> int:
    if n_bytes < SINGLE_PROCESS_BYTES and spec.data.workers is None:
        return 1
    return max(1, spec.data.workers or os.cpu_count() or 1)


def piece_size(n_bytes: int, workers: int) -> int:
    """Pieces of 256 KB to 8 MB: enough of them to keep every worker busy."""
    return int(min(8 << 20, max(256 << 10, n_bytes // max(1, 8 * workers))))


def prepare_data(spec: ExperimentSpec, cache_dir: Path, progress: Message = lambda message: None,
                 workers: int | None = None, piece_chars: int | None = None) -> PreparedData:
    """Train or reuse the tokenizer, then encode or reuse the token entry; returns their paths.

    `workers` and `piece_chars` override the spec's and the automatic choice (tests use them).
    """
    layout = Layout(spec)
    workers = workers or default_workers(spec, layout.n_bytes)
    piece_chars = piece_chars or piece_size(layout.n_bytes, workers)
    tokenizer_path, tokenizer = cached_tokenizer(spec, layout, cache_dir, workers, piece_chars, progress)
    fingerprint = tokenizer_fingerprint(tokenizer)
    with_words = needs_word_starts(spec)
    key = sha256_text(json.dumps({"tokenizer": fingerprint, "corpus": layout.corpus_sha256, **layout.split_identity,
                                  "words": with_words, "version": MANIFEST_VERSION}, sort_keys=True))[:24]
    entry = cache_dir / "tokens" / key
    if entry.exists():
        try:
            verify_entry(entry, fingerprint, with_words)
            return PreparedData(tokenizer_path, entry, layout.corpus_sha256)
        except CacheError as error:
            progress(f"token cache failed verification ({error}); rebuilding it")
    build_entry(entry, layout, tokenizer, fingerprint, with_words, workers, piece_chars, progress)
    return PreparedData(tokenizer_path, entry, layout.corpus_sha256)
