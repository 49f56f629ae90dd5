"""The token cache on disk and its memory-mapped view in the workers.

One cache entry is a directory:

    <cache>/tokens/<key>/
        manifest.json        format, version, tokenizer fingerprint, corpus sha256, dtype, and per
                             split: tokens, text bytes, sha256 of each file
        train.ids  val.ids  test.ids          the token ids, raw little-endian uint16 (vocabularies
                                              up to 65,536 tokens) or uint32
        train.words ...      only when an objective needs word starts: one bit per token
                             (numpy.packbits order), set where a pre-split word begins
        train.bytes ...      only for tokenizers whose bytes are not a function of the id (a
                             SentencePiece-style hf file, a custom tokenizer): uint32 per token

For char, BPE and byte-level hf tokenizers no per-token byte count is stored: the bytes a token
stands for are a function of its id, a table of vocab_size entries taken from the tokenizer
(`byte_table`), so it cannot overflow and costs nothing per token. (A char tokenizer's <unk> is a
special token and stands for no bytes, in training and in `gptexp eval` alike.) An entry is trusted only after `verify_entry` has checked the manifest, the
tokenizer fingerprint, the file sizes and the sha256 of every file; the launcher does that before
the workers start, and the workers only memory-map.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from gptexp.objectives import Window
    from gptexp.tokenizers import Tokenizer

MANIFEST_FORMAT = "gptexp-tokens"
MANIFEST_VERSION = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


class CacheError(ValueError):
    """A token cache entry that is missing, incomplete or does not verify."""


def ids_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds every id: ids_dtype(50257) -> uint16."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def bytes_follow_ids(tokenizer: Any) -> bool:
    """True when the bytes a token stands for depend on its id only (so a table holds them)."""
    from gptexp.tokenizers import BPETokenizer, CharTokenizer

    if isinstance(tokenizer, (BPETokenizer, CharTokenizer)):
        return True
    return getattr(tokenizer, "kind", None) == "hf" and bool(getattr(tokenizer, "_byte_level", False))


def byte_table(tokenizer: Tokenizer) -> np.ndarray:
    """int64 array of vocab_size entries: the UTF-8 bytes each token stands for (0 for specials)."""
    return np.fromiter((len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)),
                       dtype=np.int64, count=tokenizer.vocab_size)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def ids_path(entry: Path, split: str) -> Path:
    return entry / f"{split}.ids"


def words_path(entry: Path, split: str) -> Path:
    return entry / f"{split}.words"


def bytes_path(entry: Path, split: str) -> Path:
    return entry / f"{split}.bytes"


def read_manifest(entry: Path) -> dict[str, Any]:
    path = entry / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CacheError(f"{path}: unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CacheError(f"{path}: not a gptexp token cache manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CacheError(f"{path}: version {manifest.get('version')!r}, this gptexp reads {MANIFEST_VERSION}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS) or not all(
            isinstance(s, dict) and type(s.get("tokens")) is int and s["tokens"] >= 0 for s in splits.values()):
        raise CacheError(f"{path}: malformed split table")
    if manifest.get("dtype") not in ("<u2", "<u4"):
        raise CacheError(f"{path}: unknown dtype {manifest.get('dtype')!r}")
    return manifest


def verify_entry(entry: Path, tokenizer_fingerprint: str, with_words: bool) -> dict[str, Any]:
    """The manifest of a complete, intact entry made with this tokenizer; CacheError otherwise."""
    manifest = read_manifest(entry)
    if manifest.get("tokenizer_fingerprint") != tokenizer_fingerprint:
        raise CacheError(f"{entry}: made with another tokenizer")
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split, info in manifest["splits"].items():
        files = [(ids_path(entry, split), info["tokens"] * itemsize, info.get("ids_sha256"))]
        if with_words:
            files.append((words_path(entry, split), (info["tokens"] + 7) // 8, info.get("words_sha256")))
        if manifest.get("byte_counts"):
            files.append((bytes_path(entry, split), info["tokens"] * 4, info.get("bytes_sha256")))
        for path, size, sha in files:
            if not path.is_file():
                raise CacheError(f"{path}: missing")
            if path.stat().st_size != size:
                raise CacheError(f"{path}: {path.stat().st_size} bytes, the manifest says {size}")
            if file_sha256(path) != sha:
                raise CacheError(f"{path}: content does not match its checksum")
    return manifest


# ---------------------------------------------------------------------------------------------
# the workers' view


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=dtype)
    array = np.memmap(path, dtype=dtype, mode="r", shape=(count,))
    # Windows are read at random places: no read-ahead of pages nobody asked for.
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    return array


def release_pages(array: np.ndarray) -> None:
    """Unmap from this process the pages of a memory map that reads have mapped in.

    The page cache keeps them (other ranks, the next read), but the process no longer counts
    them as resident. Without this a worker's resident memory creeps towards the size of the
    token file: on kernels whose page cache holds large folios a fault maps up to a whole folio
    (about 1 MB around each window here, on Linux 6.18), and a long run touches every folio.
    MADV_DONTNEED on a read-only shared file mapping only unmaps; costs ~0.04 ms per call.
    """
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


@dataclass
class TokenSplit:
    """One split: token ids (a memory map or any 1-d integer array), the byte table of the
    tokenizer, and the bit-packed word starts when the objective needs them (else None).

    Windows are gathered from `ids` on demand, so a worker holds only the windows it uses.
    """

    ids: np.ndarray
    byte_table: np.ndarray | None
    packed_word_starts: np.ndarray | None = None
    byte_counts: np.ndarray | None = None  # per token, only where the table cannot say

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_arrays(cls, ids: np.ndarray, byte_table: np.ndarray, word_starts: np.ndarray | None = None) -> TokenSplit:
        packed = None if word_starts is None else np.packbits(np.asarray(word_starts, dtype=bool))
        return cls(np.asarray(ids), np.asarray(byte_table, dtype=np.int64), packed)

    @classmethod
    def from_encoded(cls, tokenizer: Any, encoded: Any) -> TokenSplit:
        """A split of an encoded text, counting bytes as the token cache does for this tokenizer."""
        packed = np.packbits(np.asarray(encoded.word_starts, dtype=bool))
        if bytes_follow_ids(tokenizer):
            return cls(np.asarray(encoded.ids), byte_table(tokenizer), packed)
        return cls(np.asarray(encoded.ids), None, packed, np.asarray(encoded.byte_counts, dtype=np.int64))

    def word_starts_at(self, index: np.ndarray) -> np.ndarray:
        if self.packed_word_starts is None:
            raise ValueError("this split was prepared without word starts (the objective did not need them)")
        bits = self.packed_word_starts[index >> 3]
        return ((bits >> (7 - (index & 7))) & 1).astype(bool)

    def gather(self, index: torch.Tensor) -> Window:
        """The window of tokens at the positions `index` (any shape), with bytes and word starts."""
        import torch

        from gptexp.objectives import Window

        flat = index.numpy()
        ids = np.asarray(self.ids[flat], dtype=np.int64)
        counts = self.byte_table[ids] if self.byte_counts is None else np.asarray(self.byte_counts[flat], dtype=np.int64)
        word_starts = None if self.packed_word_starts is None else torch.from_numpy(self.word_starts_at(flat))
        for array in (self.ids, self.byte_counts, self.packed_word_starts):
            if array is not None:
                release_pages(array)  # the window is copied out; a worker's memory stays flat
        return Window(ids=torch.from_numpy(ids), byte_counts=torch.from_numpy(counts), word_starts=word_starts)


@dataclass(frozen=True)
class PreparedData:
    """Where a run's tokenizer and token cache entry are; made by the launcher, read by workers."""

    tokenizer_path: Path
    tokens_dir: Path
    corpus_sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"tokenizer_path": str(self.tokenizer_path), "tokens_dir": str(self.tokens_dir),
                "corpus_sha256": self.corpus_sha256}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> PreparedData:
        return cls(Path(data["tokenizer_path"]), Path(data["tokens_dir"]), data["corpus_sha256"])

    def split_tokens(self) -> dict[str, int]:
        return {split: info["tokens"] for split, info in read_manifest(self.tokens_dir)["splits"].items()}


def load_splits(prepared: PreparedData, tokenizer: Tokenizer | None = None) -> dict[str, TokenSplit]:
    """Memory-map every split of a verified entry (the launcher verified it)."""
    from gptexp.tokenizers import load_tokenizer

    tokenizer = tokenizer or load_tokenizer(prepared.tokenizer_path)
    manifest = read_manifest(prepared.tokens_dir)
    dtype = np.dtype(manifest["dtype"])
    per_token = bool(manifest.get("byte_counts"))
    table = None if per_token else byte_table(tokenizer)
    splits = {}
    for split, info in manifest["splits"].items():
        n = info["tokens"]
        entry = prepared.tokens_dir
        packed = _map(words_path(entry, split), np.dtype(np.uint8), (n + 7) // 8) if manifest.get("word_starts") else None
        counts = _map(bytes_path(entry, split), np.dtype("<u4"), n) if per_token else None
        splits[split] = TokenSplit(_map(ids_path(entry, split), dtype, n), table, packed, counts)
    return splits
