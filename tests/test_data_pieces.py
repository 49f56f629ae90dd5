"""Splits and pieces: cutting the corpus stream never changes a token id or a word start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptexp.data import load_splits, prepare_data
from gptexp.data.pieces import cut_pieces, last_safe_cut, split_stream
from gptexp.spec import validate_spec
from gptexp.tokenizers import load_tokenizer, train_tokenizer
from gptexp.tokenizers.bpe import chunk_counts, train_bpe, train_bpe_from_counts
from tests.conftest import CORPUS

# Letters (ASCII, accented, Greek, CJK), digits, spaces, newlines, punctuation and an emoji: the
# characters whose neighbourhood decides where the split patterns cut.
ALPHABET = "abcXYZéßΩж中文😀0129 \n\n\r\t.,;'!?-=\u00a0\u2028"
texts = st.text(alphabet=ALPHABET, min_size=0, max_size=400)
SAMPLE = ("Hello world.\nThe quick brown fox,\n  jumps over 123 lazy dogs!\n\nÉcole d'été 😀 — 中文字符\n"
          "it's 42 o'clock\n=====\n") * 30
TOKENIZERS = {(kind, pattern): train_tokenizer(SAMPLE, kind=kind, vocab_size=400, pattern=pattern)
              for kind in ("bpe", "char") for pattern in ("gpt2", "gpt4")}


def test_last_safe_cut_examples() -> None:
    assert last_safe_cut("ab.\ncd\nef") == 7
    assert last_safe_cut("ab \ncd") == 0  # a space before the newline: not safe
    assert last_safe_cut("ab\n1cd") == 0  # a digit after it: not safe
    assert last_safe_cut("no newline") == 0


@settings(max_examples=200, deadline=None)
@given(text=texts, block=st.integers(1, 17), cuts=st.lists(st.integers(0, 2000), max_size=2))
def test_split_stream_cuts_at_character_boundaries(text: str, block: int, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    blocks = [data[i : i + block] for i in range(0, len(data), block)]
    cuts = sorted(cuts)
    parts: dict[int, bytes] = {}
    for number, chunk in split_stream(blocks, cuts):
        parts[number] = parts.get(number, b"") + chunk
    assert b"".join(parts[k] for k in sorted(parts)) == data
    assert sorted(parts) == list(sorted(parts)) and all(0 <= k <= len(cuts) for k in parts)
    offset = 0
    for number in range(len(cuts) + 1):
        part = parts.get(number, b"")
        part.decode("utf-8")  # each part is whole characters
        offset += len(part)
        if number < len(cuts):  # a part ends at its cut, or just after it (the rest of a character)
            assert offset >= min(cuts[number], len(data)) and offset - min(cuts[number], len(data)) < 4


# minified JSON / JavaScript: no line breaks, so pieces are cut at the ends of letter or digit runs
ONE_LINE = "abXYé中😀0129 .,:;'\"{}[]-_\t\u00a0\u0301"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(texts, st.text(alphabet=ONE_LINE, max_size=400), st.text(alphabet="ab12 ,.", max_size=200)),
       target=st.integers(1, 60),
       max_chars=st.one_of(st.none(), st.integers(1, 90)), kind=st.sampled_from(["bpe", "char"]),
       pattern=st.sampled_from(["gpt2", "gpt4"]))
def test_pieces_encode_to_exactly_the_ids_of_the_whole(text: str, target: int, max_chars: int | None, kind: str,
                                                       pattern: str) -> None:
    tokenizer = TOKENIZERS[(kind, pattern)]
    blocks = [text[i : i + 7] for i in range(0, len(text), 7)]
    pieces = list(cut_pieces(blocks, target, pattern, max_chars))
    assert "".join(pieces) == text
    whole = tokenizer.encode_for_training(text)
    parts = [tokenizer.encode_for_training(p) for p in pieces]
    ids = np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, dtype=np.int32)
    starts = np.concatenate([p.word_starts for p in parts]) if parts else np.zeros(0, dtype=bool)
    assert ids.tolist() == whole.ids.tolist()
    assert starts.tolist() == whole.word_starts.tolist()
    if kind == "bpe":  # chunk counts of the pieces add up to those of the whole text
        summed: dict[bytes, int] = {}
        for p in pieces:
            for chunk, n in chunk_counts(p, pattern).items():
                summed[chunk] = summed.get(chunk, 0) + n
        assert summed == chunk_counts(text, pattern)


def test_a_text_without_line_breaks_is_still_cut_near_the_target() -> None:
    """A worker's memory follows the piece size: minified text must not make one giant piece."""
    minified = '{"key":"value","n":12345,"list":[1,2,3],"s":"x y"}' * 2000
    pieces = list(cut_pieces([minified[i : i + 1000] for i in range(0, len(minified), 1000)], 500, "gpt4"))
    assert "".join(pieces) == minified
    assert len(pieces) > 150 and max(map(len, pieces[:-1])) <= 500 + 10  # the first run end after 500
    assert list(cut_pieces(['{"key":"value","n":12}'], 3, "gpt4", 4)) == ['{"key', '":"value', '","n', '":12', '}']
    assert list(cut_pieces(["ab", "cd ef"], 1, "gpt4", 1)) == ["abcd", " ef"]  # "ab|cd" is not a run end
    # a run of digits is never split (gpt4 groups digits by three from the start of the run)
    assert list(cut_pieces(["x=12345,y=678 ab9"], 1, "gpt4", 1)) == ["x", "=12345", ",y", "=678", " ab", "9"]


def test_pattern_none_is_one_piece() -> None:
    assert list(cut_pieces(["ab.\ncd", "\nef"], 2, "none")) == ["ab.\ncd\nef"]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(st.text(alphabet=ALPHABET, min_size=1, max_size=3000), min_size=2, max_size=5))
def test_multi_file_preparation_across_processes_equals_single_process_encoding(tmp_path_factory, documents) -> None:
    """Issue 14: a directory corpus prepared by 2 processes in small pieces gives exactly the ids
    (and word starts) of encoding each split's text in one go, and the same BPE merges."""
    root = tmp_path_factory.mktemp("corpus")
    corpus = root / "docs"
    corpus.mkdir()
    filler = "The rain in Spain.\nStays mainly in the plain, 中文 😀.\n" * 40  # enough text for two windows
    documents = [filler + d for d in documents]
    for n, doc in enumerate(documents):
        (corpus / f"{n:03d}.txt").write_text(doc, encoding="utf-8")
    spec = validate_spec({"data": {"path": str(corpus), "val_fraction": 0.2, "test_fraction": 0.1},
                          "tokenizer": {"kind": "bpe", "vocab_size": 320, "pattern": "gpt4"},
                          "objective": {"kind": "mlm", "mask_unit": "word"}}, "x")
    prepared = prepare_data(spec, root / "cache", workers=2, piece_chars=97)
    tokenizer = load_tokenizer(prepared.tokenizer_path)
    joined = "\n\n".join(documents).encode("utf-8")
    n_val, n_test = round(len(joined) * 0.2), round(len(joined) * 0.1)

    def boundary(at: int) -> int:  # cuts move forward to the next character start
        while at < len(joined) and 0x80 <= joined[at] < 0xC0:
            at += 1
        return at

    train_end = boundary(len(joined) - n_val - n_test)
    test_end = boundary(len(joined) - n_val)
    texts = {"train": joined[:train_end], "test": joined[train_end:test_end], "val": joined[test_end:]}
    assert tokenizer.merges == train_bpe(texts["train"].decode(), 320, "gpt4").merges
    splits = load_splits(prepared, tokenizer)
    for name, text in texts.items():
        expected = tokenizer.encode_for_training(text.decode())
        split = splits[name]
        assert np.asarray(split.ids).tolist() == expected.ids.tolist(), name
        assert split.word_starts_at(np.arange(len(split))).tolist() == expected.word_starts.tolist(), name


def test_bpe_trained_on_a_sample_as_large_as_the_corpus_equals_whole_corpus_training(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    base = {"data": {"path": str(corpus), "val_fraction": 0.1}, "model": {"block_size": 16}}
    whole = validate_spec({**base, "tokenizer": {"kind": "bpe", "vocab_size": 400}}, "x")
    sampled_all = validate_spec({**base, "tokenizer": {"kind": "bpe", "vocab_size": 400, "train_bytes": 10**9}}, "x")
    half = validate_spec({**base, "tokenizer": {"kind": "bpe", "vocab_size": 400, "train_bytes": 10_000}}, "x")
    raw = corpus.read_bytes()
    train_text = raw[: len(raw) - round(len(raw) * 0.1)].decode()
    reference = train_bpe(train_text, 400, "gpt4").merges
    merges = {}
    for name, spec in {"whole": whole, "sampled_all": sampled_all, "half": half}.items():
        messages: list[str] = []
        prepared = prepare_data(spec, tmp_path / "cache", progress=messages.append, workers=2, piece_chars=2_000)
        merges[name] = load_tokenizer(prepared.tokenizer_path).merges
        if name == "half":
            assert any("sample" in m for m in messages), messages
    assert merges["whole"] == reference and merges["sampled_all"] == reference
    assert merges["half"] != reference and len(merges["half"]) > 0
    assert train_bpe_from_counts(chunk_counts(train_text, "gpt4"), 400, "gpt4").merges == reference
