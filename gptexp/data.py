"""Corpus → splits → tokenizer (cached) → encoded token arrays (cached) → random training windows.

The launcher prepares the data once, before torchrun starts: it trains (or reuses) the tokenizer
and encodes each split into a compact array file (.npz). Workers only load those arrays, so N
ranks never tokenize N times and a sweep trial starts without re-encoding.

Caches live under `<runs dir>/.cache/`, keyed by content: the corpus sha256 and the tokenizer spec
(for tokenizers), the tokenizer's fingerprint and the split (for encoded arrays). Files are
written atomically, so concurrent sweep workers can share a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gptexp.spec import ExperimentSpec

if TYPE_CHECKING:
    import torch

    from gptexp.objectives import Window
    from gptexp.tokenizers import Tokenizer

SPLITS = ("train", "val", "test")
ENCODING_FORMAT_VERSION = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_text(text: str, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Contiguous splits by characters: train first, then test, then validation at the end.

    `split_text("abcdefghij", 0.2, 0.1) -> {"train": "abcdefg", "test": "h", "val": "ij"}`
    """
    n = len(text)
    n_val = int(round(n * val_fraction))
    n_test = int(round(n * test_fraction))
    n_train = n - n_val - n_test
    return {"train": text[:n_train], "test": text[n_train : n_train + n_test], "val": text[n_train + n_test :]}


def tokenizer_cache_key(corpus_sha: str, spec: ExperimentSpec) -> str:
    # The split fractions matter: the tokenizer is trained on the training split only. A file the
    # spec names (hf) or a custom class's code is part of the identity by content, not by name.
    identity = {
        "corpus": corpus_sha,
        "tokenizer": spec.tokenizer.model_dump(mode="json"),
        "val_fraction": spec.data.val_fraction,
        "test_fraction": spec.data.test_fraction,
    }
    if spec.tokenizer.kind == "hf":
        path = Path(spec.tokenizer.path)
        identity["file"] = sha256_bytes(path.read_bytes()) if path.is_file() else None
    if spec.tokenizer.kind == "custom":
        from gptexp.components import module_origin

        identity["code"] = module_origin(spec.tokenizer.target)["sha256"]
    return sha256_bytes(json.dumps(identity, sort_keys=True).encode())[:24]


@dataclass(frozen=True)
class PreparedData:
    """Where a run's tokenizer and encoded splits are; made by the launcher, read by workers."""

    tokenizer_path: Path
    arrays_path: Path  # an .npz holding <split>/ids, <split>/byte_counts, <split>/word_starts
    corpus_sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"tokenizer_path": str(self.tokenizer_path), "arrays_path": str(self.arrays_path),
                "corpus_sha256": self.corpus_sha256}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> PreparedData:
        return cls(Path(data["tokenizer_path"]), Path(data["arrays_path"]), data["corpus_sha256"])


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_data(spec: ExperimentSpec, cache_dir: Path, progress: Callable[[str], None] = lambda message: None) -> PreparedData:
    """Train or reuse the tokenizer, then encode or reuse each split; returns the cached paths."""
    from gptexp.components import build_tokenizer
    from gptexp.tokenizers import load_tokenizer
    from gptexp.tokenizers.base import save_tokenizer, tokenizer_fingerprint

    raw = Path(spec.data.path).read_bytes()
    corpus_sha = sha256_bytes(raw)
    text = raw.decode("utf-8")
    splits = split_text(text, spec.data.val_fraction, spec.data.test_fraction)

    tokenizer_path = cache_dir / "tokenizers" / f"{tokenizer_cache_key(corpus_sha, spec)}.json"
    if tokenizer_path.exists():
        tokenizer = load_tokenizer(tokenizer_path)
    else:
        if spec.tokenizer.kind == "hf":
            progress(f"loading hf tokenizer {spec.tokenizer.path}")
        else:
            progress(f"training {spec.tokenizer.kind} tokenizer on {len(splits['train']):,} characters")
        tokenizer = build_tokenizer(spec.tokenizer, splits["train"])
        _atomic_write(tokenizer_path, lambda path: save_tokenizer(tokenizer, path))

    arrays_key = sha256_bytes(f"{tokenizer_fingerprint(tokenizer)}:{corpus_sha}:{spec.data.val_fraction}:"
                              f"{spec.data.test_fraction}:v{ENCODING_FORMAT_VERSION}".encode())[:24]
    arrays_path = cache_dir / "encoded" / f"{arrays_key}.npz"
    if not arrays_path.exists():
        progress(f"encoding {len(raw):,} bytes of text")
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            encoded = tokenizer.encode_for_training(splits[split])
            arrays[f"{split}/ids"] = np.asarray(encoded.ids, dtype=np.int32)
            arrays[f"{split}/byte_counts"] = np.asarray(encoded.byte_counts, dtype=np.uint8)
            arrays[f"{split}/word_starts"] = np.asarray(encoded.word_starts, dtype=np.bool_)

        def write_npz(path: Path) -> None:
            with open(path, "wb") as f:
                np.savez(f, **arrays)

        _atomic_write(arrays_path, write_npz)
    return PreparedData(tokenizer_path, arrays_path, corpus_sha)


# ---------------------------------------------------------------------------------------------
# in the workers


@dataclass
class TokenSplit:
    """One split as torch tensors: token ids, the UTF-8 bytes each stands for, word starts."""

    ids: torch.Tensor
    byte_counts: torch.Tensor
    word_starts: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.numel())


def load_splits(prepared: PreparedData) -> dict[str, TokenSplit]:
    import torch

    with np.load(prepared.arrays_path) as arrays:
        return {
            split: TokenSplit(
                ids=torch.from_numpy(arrays[f"{split}/ids"].astype(np.int64)),
                byte_counts=torch.from_numpy(arrays[f"{split}/byte_counts"].astype(np.int64)),
                word_starts=torch.from_numpy(arrays[f"{split}/word_starts"].copy()),
            )
            for split in SPLITS
        }


def sample_windows(split: TokenSplit, batch_size: int, window: int, generator: torch.Generator) -> Window:
    """`batch_size` random windows of `window` consecutive tokens (window = block_size + 1)."""
    import torch

    from gptexp.objectives import Window

    if len(split) < window + 1:
        raise ValueError(f"split has {len(split)} tokens, fewer than one window of {window}")
    starts = torch.randint(0, len(split) - window + 1, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(window)[None, :]  # (B, window)
    return Window(ids=split.ids[index], byte_counts=split.byte_counts[index], word_starts=split.word_starts[index])


def step_seed(seed: int, rank: int, step: int, micro_step: int = 0, stream: int = 0) -> int:
    """A seed for one (rank, step, micro-step) that does not depend on what ran before.

    Data order, masking and dropout are seeded this way, so a run resumed at step k draws exactly
    the batches and masks the uninterrupted run drew after step k, with no RNG state to restore.
    """
    digest = hashlib.blake2b(f"{seed}:{rank}:{step}:{micro_step}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
