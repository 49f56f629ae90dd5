from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gptexp.data import TokenSplit, load_splits, prepare_data, sample_windows, split_text, step_seed
from gptexp.spec import validate_spec
from tests.conftest import CORPUS, REPO_ROOT

SHIPPED_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_shipped_corpus_is_tinyshakespeare() -> None:
    assert hashlib.sha256(CORPUS.read_bytes()).hexdigest() == SHIPPED_SHA256
    shared = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt.sha256"
    if shared.exists():
        assert shared.read_text().split()[0] == SHIPPED_SHA256


def test_split_text_is_contiguous_and_complete() -> None:
    assert split_text("abcdefghij", 0.2, 0.1) == {"train": "abcdefg", "test": "h", "val": "ij"}
    parts = split_text("x" * 1001, 0.1, 0.0)
    assert len(parts["train"]) + len(parts["val"]) == 1001 and parts["test"] == ""


def test_step_seed_is_a_pure_function_of_its_arguments() -> None:
    assert step_seed(1, 0, 5) == step_seed(1, 0, 5)
    seeds = {step_seed(1, rank, step, micro, stream) for rank in range(2) for step in range(50)
             for micro in range(2) for stream in range(3)}
    assert len(seeds) == 2 * 50 * 2 * 3  # distinct per rank, step, micro-step and stream
    assert all(0 <= s < 2**63 for s in seeds)


def test_sample_windows_are_consecutive_tokens_with_their_bytes() -> None:
    n = 1000
    split = TokenSplit(ids=torch.arange(n), byte_counts=torch.arange(n) % 3 + 1, word_starts=torch.arange(n) % 4 == 0)
    window = sample_windows(split, batch_size=16, window=9, generator=torch.Generator().manual_seed(0))
    assert window.ids.shape == (16, 9)
    assert torch.equal(window.ids[:, 1:] - window.ids[:, :-1], torch.ones(16, 8, dtype=torch.long))
    assert torch.equal(window.byte_counts, window.ids % 3 + 1)
    assert torch.equal(window.word_starts, window.ids % 4 == 0)
    again = sample_windows(split, 16, 9, torch.Generator().manual_seed(0))
    assert torch.equal(again.ids, window.ids)
    with pytest.raises(ValueError, match="fewer than one window"):
        sample_windows(TokenSplit(torch.arange(5), torch.ones(5), torch.ones(5, dtype=torch.bool)), 1, 9,
                       torch.Generator())


def test_prepare_data_caches_tokenizer_and_arrays(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Héllo wörld, the quick brown fox. " * 300, encoding="utf-8")
    spec = validate_spec({"data": {"path": str(corpus), "val_fraction": 0.2}}, "x")
    cache = tmp_path / "cache"
    messages: list[str] = []
    first = prepare_data(spec, cache, progress=messages.append)
    assert any("training char tokenizer" in m for m in messages)
    assert any("encoding" in m for m in messages)
    mtimes = (first.tokenizer_path.stat().st_mtime_ns, first.arrays_path.stat().st_mtime_ns)

    messages.clear()
    second = prepare_data(spec, cache, progress=messages.append)
    assert second == first and messages == []  # nothing retrained, nothing re-encoded
    assert (first.tokenizer_path.stat().st_mtime_ns, first.arrays_path.stat().st_mtime_ns) == mtimes

    splits = load_splits(first)
    text = corpus.read_text(encoding="utf-8")
    n_val = round(len(text) * 0.2)
    assert len(splits["train"]) == len(text) - n_val and len(splits["val"]) == n_val  # char: 1 token per char
    assert int(splits["train"].byte_counts.sum()) == len(text[: len(text) - n_val].encode("utf-8"))

    # A different tokenizer spec is a different cache entry.
    bpe = validate_spec({"data": {"path": str(corpus)}, "tokenizer": {"kind": "bpe", "vocab_size": 300}}, "x")
    assert prepare_data(bpe, cache).tokenizer_path != first.tokenizer_path
    assert not [p for p in cache.rglob("*.tmp")]  # atomic writes leave no temp files


def test_encoded_arrays_are_compact(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc def " * 100)
    prepared = prepare_data(validate_spec({"data": {"path": str(corpus)}}, "x"), tmp_path)
    with np.load(prepared.arrays_path) as arrays:
        assert arrays["train/ids"].dtype == np.int32 and arrays["train/byte_counts"].dtype == np.uint8
    assert os.path.getsize(prepared.arrays_path) < 800 * 6 + 4096
