"""Corpora as users have them: files, directories, globs, JSON Lines, Parquet, a separate val corpus."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gptexp.data import CorpusError, check_corpus, load_splits, prepare_data
from gptexp.data.corpus import corpus_sources, read_blocks, scan
from gptexp.spec import SpecError, check_data_file, validate_spec
from gptexp.tokenizers import load_tokenizer


def data_spec(**data):
    return validate_spec({"data": data, "model": {"block_size": 8}}, "x")


def joined(source) -> bytes:
    return b"".join(read_blocks(source))


def test_a_directory_is_its_files_in_path_order_joined_by_the_separator(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("two")
    (tmp_path / "1.txt").write_text("one")
    (tmp_path / ".hidden").write_text("never")
    (tmp_path / "b" / ".git").mkdir()
    (tmp_path / "b" / ".git" / "x").write_text("never")
    source, val = corpus_sources(data_spec(path=str(tmp_path)).data)
    assert val is None and [f.name for f in source.files] == ["1.txt", "2.txt"]
    assert joined(source) == b"one\n\ntwo"
    info = scan(source)
    assert info.sha256 == hashlib.sha256(b"one\n\ntwo").hexdigest() and info.n_documents == 2 and info.n_bytes == 8
    custom, _ = corpus_sources(data_spec(path=str(tmp_path), separator="<|doc|>").data)
    assert joined(custom) == b"one<|doc|>two"


def test_a_glob_selects_files(tmp_path: Path) -> None:
    for name in ("a.txt", "b.md", "c.txt"):
        (tmp_path / name).write_text(name)
    source, _ = corpus_sources(data_spec(path=str(tmp_path / "*.txt")).data)
    assert joined(source) == b"a.txt\n\nc.txt"
    with pytest.raises(CorpusError, match="no files match"):
        corpus_sources(data_spec(path=str(tmp_path / "*.rst")).data)


def test_a_single_file_keeps_its_own_sha256(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_bytes("héllo\n".encode() * 10)
    info, _ = check_corpus(data_spec(path=str(corpus)).data)
    assert info.sha256 == hashlib.sha256(corpus.read_bytes()).hexdigest()


def test_jsonl_documents_come_from_the_named_field(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": i, "body": f"doc {i} é"}) for i in range(3)) + "\n\n")
    source, _ = corpus_sources(data_spec(path=str(corpus), format="jsonl", field="body").data)
    assert joined(source) == "doc 0 é\n\ndoc 1 é\n\ndoc 2 é".encode()
    assert scan(source).n_documents == 3
    with pytest.raises(CorpusError, match=r"c.jsonl:1: no field 'text'"):
        scan(corpus_sources(data_spec(path=str(corpus), format="jsonl").data)[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: field 'text' is int"):
        check_corpus(data_spec(path=str(bad), format="jsonl").data)
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: not a JSON object"):
        check_corpus(data_spec(path=str(bad), format="jsonl").data)


def test_parquet_documents(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    corpus = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["first doc", None, "second ü"], "n": [1, 2, 3]}), corpus)
    source, _ = corpus_sources(data_spec(path=str(corpus), format="parquet").data)
    assert joined(source) == "first doc\n\nsecond ü".encode()
    with pytest.raises(CorpusError, match="no column 'body'"):
        check_corpus(data_spec(path=str(corpus), format="parquet", field="body").data)
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        check_corpus(data_spec(path=str(not_parquet), format="parquet").data)


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    with pytest.raises(CorpusError, match=r"pip install 'gptexp\[parquet\]'"):
        check_corpus(data_spec(path=str(tmp_path / "c.parquet"), format="parquet").data)


def test_a_fifo_or_a_device_is_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes: reading it would block for ever
    with pytest.raises(SpecError, match="not a regular file"):
        check_data_file(data_spec(path=str(fifo)))
    with pytest.raises(SpecError, match="not a regular file"):
        check_data_file(data_spec(path="/dev/zero"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.txt").write_text("text")
    os.mkfifo(tmp_path / "dir" / "b.fifo")
    with pytest.raises(SpecError, match=r"b.fifo: not a regular file"):
        check_data_file(data_spec(path=str(tmp_path / "dir")))


def test_bad_corpora_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9 au lait".encode("latin-1"))
    cases = {str(tmp_path / "missing.txt"): "file not found", str(tmp_path / "empty"): "is a directory with no files",
             str(tmp_path / "empty.txt"): "file is empty", str(tmp_path / "latin1.txt"): r"not UTF-8 text \(byte 6\)"}
    for path, message in cases.items():
        with pytest.raises(SpecError, match=message):
            check_data_file(data_spec(path=path))


def test_val_path_replaces_the_fraction_split(tmp_path: Path) -> None:
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("the cat sat on the mat.\n" * 200)
    val.write_text("a dog sat on a log.\n" * 50)
    spec = validate_spec({"data": {"path": str(train), "val_path": str(val), "test_fraction": 0.1},
                          "tokenizer": {"kind": "bpe", "vocab_size": 300}, "model": {"block_size": 8}}, "x")
    prepared = prepare_data(spec, tmp_path / "cache")
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    splits = load_splits(prepared, tokenizer)
    assert tokenizer.decode(np.asarray(splits["val"].ids).tolist()) == val.read_text()
    n = len(train.read_bytes())
    assert tokenizer.decode(np.asarray(splits["train"].ids).tolist()) == train.read_text()[: n - round(n * 0.1)]
    assert tokenizer.decode(np.asarray(splits["test"].ids).tolist()) == train.read_text()[n - round(n * 0.1):]
    # another validation text is another cache entry and another corpus identity
    val.write_text("a frog sat on a bog.\n" * 50)
    other = prepare_data(spec, tmp_path / "cache")
    assert other.tokens_dir != prepared.tokens_dir and other.corpus_sha256 != prepared.corpus_sha256


def test_a_thousand_files_prepare_in_parallel_into_one_verified_entry(tmp_path: Path) -> None:
    corpus = tmp_path / "many"
    corpus.mkdir()
    for i in range(1000):
        (corpus / f"{i:04d}.txt").write_text(f"Document {i}.\nIt says {i * 7} things, ünïcode too.\n")
    spec = validate_spec({"data": {"path": str(corpus), "workers": 2}, "model": {"block_size": 8}}, "x")
    messages: list[str] = []
    prepared = prepare_data(spec, tmp_path / "cache", progress=messages.append, piece_chars=4096)
    assert any("encoding with 2 processes" in m for m in messages)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    text = "\n\n".join((corpus / f"{i:04d}.txt").read_text() for i in range(1000))
    splits = load_splits(prepared, tokenizer)
    decoded = "".join(tokenizer.decode(np.asarray(splits[s].ids).tolist()) for s in ("train", "test", "val"))
    assert decoded == text
