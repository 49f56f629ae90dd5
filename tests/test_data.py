"""The token cache: preparation, caching, verification, memory-mapped splits and windows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptexp.data import (CacheError, TokenSplit, byte_table, load_splits, needs_word_starts, prepare_data,
                         sample_windows, step_seed)
from gptexp.data.pieces import split_byte_ranges
from gptexp.data.tokens import ids_dtype, verify_entry
from gptexp.spec import validate_spec
from gptexp.tokenizers import load_tokenizer
from tests.conftest import CORPUS, REPO_ROOT

SHIPPED_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def spec_for(corpus: Path, **sections: dict):
    return validate_spec({"data": {"path": str(corpus), **sections.pop("data", {})}, **sections}, "x")


def test_shipped_corpus_is_tinyshakespeare() -> None:
    assert hashlib.sha256(CORPUS.read_bytes()).hexdigest() == SHIPPED_SHA256
    shared = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt.sha256"
    if shared.exists():
        assert shared.read_text().split()[0] == SHIPPED_SHA256


def test_split_byte_ranges_are_contiguous_and_complete() -> None:
    assert split_byte_ranges(10, 0.2, 0.1) == {"train": (0, 7), "test": (7, 8), "val": (8, 10)}
    ranges = split_byte_ranges(1001, 0.1, 0.0)
    assert ranges["train"] == (0, 901) and ranges["test"] == (901, 901) and ranges["val"] == (901, 1001)


def test_step_seed_is_a_pure_function_of_its_arguments() -> None:
    assert step_seed(1, 0, 5) == step_seed(1, 0, 5)
    seeds = {step_seed(1, rank, step, micro, stream) for rank in range(2) for step in range(50)
             for micro in range(2) for stream in range(3)}
    assert len(seeds) == 2 * 50 * 2 * 3  # distinct per rank, step, micro-step and stream
    assert all(0 <= s < 2**63 for s in seeds)


def test_sample_windows_are_consecutive_tokens_with_their_bytes() -> None:
    n = 1000
    table = np.arange(n) % 3 + 1
    split = TokenSplit.from_arrays(np.arange(n, dtype=np.uint16), table, np.arange(n) % 4 == 0)
    window = sample_windows(split, batch_size=16, window=9, generator=torch.Generator().manual_seed(0))
    assert window.ids.shape == (16, 9) and window.ids.dtype == torch.long
    assert torch.equal(window.ids[:, 1:] - window.ids[:, :-1], torch.ones(16, 8, dtype=torch.long))
    assert torch.equal(window.byte_counts, window.ids % 3 + 1)
    assert torch.equal(window.word_starts, window.ids % 4 == 0)
    again = sample_windows(split, 16, 9, torch.Generator().manual_seed(0))
    assert torch.equal(again.ids, window.ids)
    assert sample_windows(TokenSplit.from_arrays(np.arange(n), table), 2, 9, torch.Generator()).word_starts is None
    with pytest.raises(ValueError, match="fewer than one window"):
        sample_windows(TokenSplit.from_arrays(np.arange(5), table), 1, 9, torch.Generator())


def test_prepare_data_caches_tokenizer_and_tokens(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Héllo wörld, the quick brown fox.\n" * 300, encoding="utf-8")
    spec = spec_for(corpus, data={"val_fraction": 0.2})
    cache = tmp_path / "cache"
    messages: list[str] = []
    first = prepare_data(spec, cache, progress=messages.append)
    assert any("char tokenizer" in m for m in messages)
    assert any("encoding" in m for m in messages)
    mtimes = (first.tokenizer_path.stat().st_mtime_ns, (first.tokens_dir / "train.ids").stat().st_mtime_ns)

    messages.clear()
    second = prepare_data(spec, cache, progress=messages.append)
    assert second == first and messages == []  # nothing retrained, nothing re-encoded
    assert (first.tokenizer_path.stat().st_mtime_ns, (first.tokens_dir / "train.ids").stat().st_mtime_ns) == mtimes
    assert first.corpus_sha256 == hashlib.sha256(corpus.read_bytes()).hexdigest()

    splits = load_splits(first)
    raw = corpus.read_bytes()
    n_val = round(len(raw) * 0.2)
    train_text = raw[: len(raw) - n_val].decode()
    assert len(splits["train"]) == len(train_text)  # char: one token per character
    assert int(splits["train"].byte_table[np.asarray(splits["train"].ids)].sum()) == len(raw) - n_val
    assert isinstance(splits["train"].ids, np.memmap)

    # A different tokenizer spec is a different cache entry.
    bpe = spec_for(corpus, tokenizer={"kind": "bpe", "vocab_size": 300})
    assert prepare_data(bpe, cache).tokenizer_path != first.tokenizer_path
    assert not [p for p in cache.rglob("*.tmp")] and not list(cache.glob("tokens/.build-*"))


def test_ids_use_the_narrowest_dtype_and_no_per_token_bytes(tmp_path: Path) -> None:
    assert ids_dtype(300) == np.uint16 and ids_dtype(65_536) == np.uint16 and ids_dtype(65_537) == np.uint32
    corpus = tmp_path / "c.txt"
    corpus.write_text("abc def\n" * 1000)
    prepared = prepare_data(spec_for(corpus), tmp_path / "cache")
    files = sorted(p.name for p in prepared.tokens_dir.iterdir())
    assert files == ["manifest.json", "test.ids", "train.ids", "val.ids"]  # clm: no word starts
    assert (prepared.tokens_dir / "train.ids").stat().st_size == 2 * len(load_splits(prepared)["train"])

    # A vocabulary beyond 65,536 tokens (a char tokenizer of 70,000 distinct characters) needs uint32.
    wide = tmp_path / "wide.txt"
    wide.write_text("".join(chr(0x10000 + i) for i in range(70_000)) * 2, encoding="utf-8")
    prepared = prepare_data(spec_for(wide, model={"block_size": 8}), tmp_path / "cache")
    assert json.loads((prepared.tokens_dir / "manifest.json").read_text())["dtype"] == "<u4"
    ids = np.asarray(load_splits(prepared)["train"].ids)
    assert ids.dtype == np.uint32 and int(ids.max()) >= 65_536
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    assert tokenizer.decode(ids[:5].tolist()) == "".join(chr(0x10000 + i) for i in range(5))


def rule_line_corpus(path: Path) -> Path:
    # pattern none + rule lines: BPE learns tokens of 256 '=' and more (the uint8 count wrapped to 0)
    path.write_text("".join(f"Section {i}: some words here\n{'=' * 300}\n" for i in range(120)), encoding="utf-8")
    return path


def test_bytes_per_token_come_from_the_tokenizer_and_do_not_wrap(tmp_path: Path) -> None:
    """Issue 10 (high): a BPE token of more than 255 bytes made val/bpb silently wrong."""
    corpus = rule_line_corpus(tmp_path / "rules.txt")
    spec = spec_for(corpus, tokenizer={"kind": "bpe", "vocab_size": 300, "pattern": "none"}, data={"val_fraction": 0.25})
    prepared = prepare_data(spec, tmp_path / "cache")
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    splits = load_splits(prepared)
    assert max(len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)) > 255  # the case that wrapped
    raw = corpus.read_bytes()
    val_bytes = raw[len(raw) - round(len(raw) * 0.25):]
    val = splits["val"]
    assert int(val.byte_table[np.asarray(val.ids)].sum()) == len(val_bytes)
    # every window's byte counts are the byte lengths of its tokens
    window = sample_windows(val, 8, 33, torch.Generator().manual_seed(1))
    assert window.byte_counts.tolist() == [[len(tokenizer.token_bytes(i)) for i in row] for row in window.ids.tolist()]
    assert int(window.byte_counts.max()) > 255
    assert byte_table(tokenizer).dtype == np.int64


def test_memory_mapped_windows_equal_the_in_memory_reference(tmp_path: Path) -> None:
    """The same seed draws the same windows (ids, bytes, word starts) as encoding the split in memory."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    spec = spec_for(corpus, tokenizer={"kind": "bpe", "vocab_size": 400},
                    objective={"kind": "mlm", "mask_unit": "word"})
    assert needs_word_starts(spec)
    prepared = prepare_data(spec, tmp_path / "cache", workers=2, piece_chars=20_000)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    mapped = load_splits(prepared, tokenizer)["train"]
    raw = corpus.read_bytes()
    encoded = tokenizer.encode_for_training(raw[: len(raw) - round(len(raw) * 0.1)].decode())
    reference = {"ids": torch.as_tensor(encoded.ids, dtype=torch.long),
                 "bytes": torch.as_tensor(encoded.byte_counts, dtype=torch.long),
                 "words": torch.as_tensor(encoded.word_starts)}
    assert len(mapped) == len(encoded)
    for seed in range(5):
        window = sample_windows(mapped, 16, 65, torch.Generator().manual_seed(seed))
        starts = torch.randint(0, len(encoded) - 65 + 1, (16,), generator=torch.Generator().manual_seed(seed))
        index = starts[:, None] + torch.arange(65)[None, :]
        assert torch.equal(window.ids, reference["ids"][index])
        assert torch.equal(window.byte_counts, reference["bytes"][index])
        assert torch.equal(window.word_starts, reference["words"][index])


def resident_kb(path: Path) -> int:
    """How much of `path` this process has mapped in (the Rss of its mappings in /proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            current = fields[5] if len(fields) > 5 else None
        elif fields[0] == "Rss:" and current == str(path):
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_windows_leave_no_pages_of_the_token_files_mapped_in(tmp_path: Path) -> None:
    """A worker's resident memory must not creep towards the size of its token files as a run
    reads windows all over them (each fault maps a whole page-cache folio, up to MBs)."""
    from gptexp.data.tokens import _map

    n = 4_000_000  # 8 MB of uint16 ids, 500 KB of word bits
    rng = np.random.default_rng(0)
    ids_file, words_file = tmp_path / "train.ids", tmp_path / "train.words"
    ids_file.write_bytes(rng.integers(0, 8192, n, dtype=np.uint16).tobytes())
    words_file.write_bytes(rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8).tobytes())
    split = TokenSplit(_map(ids_file, np.dtype("<u2"), n), np.ones(8192, dtype=np.int64),
                       _map(words_file, np.dtype(np.uint8), (n + 7) // 8))
    in_memory = TokenSplit(np.fromfile(ids_file, dtype="<u2"), np.ones(8192, dtype=np.int64),
                           np.fromfile(words_file, dtype=np.uint8))
    mapped_draws, memory_draws = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for _ in range(50):
        window = sample_windows(split, 16, 257, mapped_draws)
        reference = sample_windows(in_memory, 16, 257, memory_draws)
        assert torch.equal(window.ids, reference.ids) and torch.equal(window.word_starts, reference.word_starts)
    assert resident_kb(ids_file) == 0 and resident_kb(words_file) == 0


def _entry_file(prepared, name: str) -> Path:
    return prepared.tokens_dir / name


@pytest.mark.parametrize("damage", ["flip a byte of the ids", "truncate the ids", "garbage manifest",
                                    "manifest of another tokenizer", "remove a split"])
def test_a_damaged_token_cache_is_rebuilt_with_a_line_saying_so(tmp_path: Path, damage: str) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 400)
    spec = spec_for(corpus, tokenizer={"kind": "bpe", "vocab_size": 300})
    cache = tmp_path / "cache"
    prepared = prepare_data(spec, cache)
    good = (prepared.tokens_dir / "train.ids").read_bytes()
    ids_file, manifest = prepared.tokens_dir / "train.ids", prepared.tokens_dir / "manifest.json"
    if damage == "flip a byte of the ids":  # well-formed, wrong ids: used silently before
        data = bytearray(good)
        data[10] ^= 0x01
        ids_file.write_bytes(bytes(data))
    elif damage == "truncate the ids":
        ids_file.write_bytes(good[:-3])
    elif damage == "garbage manifest":
        manifest.write_text("{not json")
    elif damage == "manifest of another tokenizer":
        m = json.loads(manifest.read_text())
        m["tokenizer_fingerprint"] = "0" * 64
        manifest.write_text(json.dumps(m))
    else:
        (prepared.tokens_dir / "val.ids").unlink()
    with pytest.raises(CacheError):
        verify_entry(prepared.tokens_dir, load_tokenizer(prepared.tokenizer_path).fingerprint(), False)
    messages: list[str] = []
    again = prepare_data(spec, cache, progress=messages.append)
    assert again == prepared
    assert any("token cache failed verification" in m and "rebuilding" in m for m in messages), messages
    assert ids_file.read_bytes() == good
    verify_entry(again.tokens_dir, load_tokenizer(again.tokenizer_path).fingerprint(), False)
    assert not list(cache.glob("tokens/.stale-*")) and not list(cache.glob("tokens/.build-*"))


def test_a_corrupt_tokenizer_cache_is_retrained(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be\n" * 400)
    spec = spec_for(corpus, tokenizer={"kind": "bpe", "vocab_size": 280})
    prepared = prepare_data(spec, tmp_path / "cache")
    good = prepared.tokenizer_path.read_text()
    prepared.tokenizer_path.write_text(good[: len(good) // 2])
    messages: list[str] = []
    again = prepare_data(spec, tmp_path / "cache", progress=messages.append)
    assert any("tokenizer cache unreadable" in m for m in messages), messages
    assert load_tokenizer(again.tokenizer_path).fingerprint() == json.loads(
        (again.tokens_dir / "manifest.json").read_text())["tokenizer_fingerprint"]


def test_word_starts_are_stored_bit_packed_only_for_word_masking(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("Héllo wörld, the quick brown fox.\n" * 300, encoding="utf-8")
    word = spec_for(corpus, objective={"kind": "mlm", "mask_unit": "word"})
    token = spec_for(corpus, objective={"kind": "mlm", "mask_unit": "token"})
    assert needs_word_starts(word) and not needs_word_starts(token)
    prepared = prepare_data(word, tmp_path / "cache")
    n = len(load_splits(prepared)["train"])
    assert (prepared.tokens_dir / "train.words").stat().st_size == (n + 7) // 8
    split = load_splits(prepared)["train"]
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    raw = corpus.read_bytes()
    expected = tokenizer.encode_for_training(raw[: len(raw) - round(len(raw) * 0.1)].decode()).word_starts
    assert np.array_equal(split.word_starts_at(np.arange(n)), expected)
    assert not (prepare_data(token, tmp_path / "cache").tokens_dir / "train.words").exists()


def test_an_hf_tokenizer_without_byte_level_stores_bytes_per_token(tmp_path: Path) -> None:
    """A WordLevel file's tokens stand for different bytes at different places (spaces around them):
    the cache keeps a uint32 count per token, and the split's bytes still sum to the text's."""
    tokenizers = pytest.importorskip("tokenizers")
    text = "the cat sat on the mat . a dog sat on a log .\n" * 300
    vocab = {w: i for i, w in enumerate(["[UNK]", *sorted(set(text.split()))])}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    hf.save(str(tmp_path / "tokenizer.json"))
    corpus = tmp_path / "c.txt"
    corpus.write_text(text)
    spec = spec_for(corpus, tokenizer={"kind": "hf", "path": str(tmp_path / "tokenizer.json")}, model={"block_size": 8})
    prepared = prepare_data(spec, tmp_path / "cache")
    manifest = json.loads((prepared.tokens_dir / "manifest.json").read_text())
    assert manifest["byte_counts"] is True and (prepared.tokens_dir / "train.bytes").exists()
    split = load_splits(prepared)["train"]
    raw = corpus.read_bytes()
    assert int(np.asarray(split.byte_counts, dtype=np.int64).sum()) == len(raw) - round(len(raw) * 0.1)
    window = sample_windows(split, 4, 9, torch.Generator().manual_seed(0))
    assert int(window.byte_counts.min()) >= 1


def test_progress_is_plain_lines_with_rate_and_eta_off_a_terminal() -> None:
    from gptexp.data.progress import ByteProgress

    lines: list[str] = []
    with ByteProgress("encoding", 4_000_000, lines.append, tty=False, every_s=0.0) as bar:
        bar.advance(1_000_000)
        bar.advance(1_000_000)
    assert lines[0] == "encoding: 4.0 MB"
    assert lines[1].startswith("encoding: 25% (1.0 of 4.0 MB,") and "MB/s" in lines[1] and "ETA" in lines[1]
    assert lines[-1].startswith("encoding: done, 2.0 MB in")
    quiet: list[str] = []
    with ByteProgress("encoding", 4_000_000, quiet.append, tty=True) as bar:  # a rich bar on stderr instead
        bar.advance(4_000_000)
    assert len(quiet) == 1 and "done" in quiet[0]
