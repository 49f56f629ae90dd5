"""`tokenizer: {kind: hf, path: tokenizer.json}`: any Hugging Face `tokenizers` file, with every token
carrying the UTF-8 bytes of the text it stands for (so val/bpb stays comparable across tokenizers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptexp.data import load_splits, prepare_data
from gptexp.spec import validate_spec
from gptexp.tokenizers import load_tokenizer, train_tokenizer
from gptexp.tokenizers.hf import export_hf
from gptexp.tokenizers.hf_file import HFFileTokenizer
from gptexp.tokenizers.roles import role_ids
from tests.conftest import CORPUS, TINY_SPEC, run_cli
from tests.test_tokenizers_hf import ASSIGNED, TRICKY

hf = pytest.importorskip("tokenizers")

TEXT = CORPUS.read_text(encoding="utf-8")[:30000]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three pretrained files built offline: GPT-2-style byte-level BPE, a BERT-style WordPiece
    (lowercasing normalizer, whitespace dropped), a Metaspace BPE (SentencePiece style); and one
    written by gptexp's own export."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("hf-files")
    out = {}

    gpt2 = Tokenizer(models.BPE())
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    gpt2.decoder = decoders.ByteLevel()
    gpt2.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out["gpt2"] = root / "gpt2.json"
    gpt2.save(str(out["gpt2"]))

    bert = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    bert.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    bert.pre_tokenizer = pre_tokenizers.Whitespace()
    bert.decoder = decoders.WordPiece()
    bert.train_from_iterator([TEXT], trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    out["wordpiece"] = root / "wordpiece.json"
    bert.save(str(out["wordpiece"]))

    sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    sp.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]
                                                       + [f"<0x{b:02X}>" for b in range(256)]))
    out["metaspace"] = root / "metaspace.json"
    sp.save(str(out["metaspace"]))

    ours = train_tokenizer(TEXT, kind="bpe", vocab_size=350)
    out["gptexp"] = root / "gptexp-export.json"
    export_hf(ours, out["gptexp"])
    ours.save(root / "gptexp-own.json")
    out["gptexp-own"] = root / "gptexp-own.json"
    return out


@pytest.mark.parametrize("kind", ["gpt2", "wordpiece", "metaspace", "gptexp"])
def test_byte_counts_add_up_to_the_text_for_every_decoder(files: dict[str, Path], kind: str) -> None:
    tok = HFFileTokenizer.from_file(files[kind])
    for text in TRICKY + [TEXT[:3000]]:
        encoded = tok.encode_for_training(text)
        assert encoded.num_bytes == len(text.encode("utf-8")), (kind, text)
        assert encoded.ids.tolist() == tok.encode(text)
        assert bool(encoded.word_starts[0]) if len(encoded) else True


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=ASSIGNED, max_size=60))
def test_byte_counts_add_up_for_any_text(files: dict[str, Path], text: str) -> None:
    for kind in ("gpt2", "wordpiece", "metaspace"):
        tok = HFFileTokenizer.from_file(files[kind])
        encoded = tok.encode_for_training(text)
        if len(encoded):  # WordPiece drops whitespace-only text entirely: no token to carry it
            assert encoded.num_bytes == len(text.encode("utf-8")), kind


def test_byte_level_tokens_carry_exactly_their_own_bytes(files: dict[str, Path]) -> None:
    tok = HFFileTokenizer.from_file(files["gpt2"])
    text = "naïve café 😀 日本語 — done"
    encoded = tok.encode_for_training(text)
    pieces = [tok.token_bytes(i) for i in encoded.ids.tolist()]
    assert b"".join(pieces) == text.encode("utf-8")
    assert [len(p) for p in pieces] == encoded.byte_counts.tolist()


def test_a_gptexp_export_read_back_encodes_and_counts_like_gptexp(files: dict[str, Path]) -> None:
    ours = load_tokenizer(files["gptexp-own"])
    theirs = HFFileTokenizer.from_file(files["gptexp"])
    assert theirs.vocab_size == ours.vocab_size and theirs.special_tokens == ours.special_tokens
    for text in TRICKY + [TEXT[:5000]]:
        a, b = ours.encode_for_training(text), theirs.encode_for_training(text)
        assert a.ids.tolist() == b.ids.tolist()
        assert a.byte_counts.tolist() == b.byte_counts.tolist()
        assert theirs.decode(b.ids.tolist()) == text


def test_special_tokens_are_text_unless_allowed(files: dict[str, Path]) -> None:
    tok = HFFileTokenizer.from_file(files["gpt2"])
    eos = tok.special_tokens["<|endoftext|>"]
    assert role_ids(tok.special_tokens) == {"eos": eos}
    plain = tok.encode("a<|endoftext|>b")
    assert eos not in plain and tok.decode(plain) == "a<|endoftext|>b"
    assert eos in tok.encode("a<|endoftext|>b", allow_special=True)
    bert = HFFileTokenizer.from_file(files["wordpiece"])
    assert set(role_ids(bert.special_tokens)) == {"pad", "unk", "bos", "eos", "mask"}


def test_the_run_file_round_trips_and_names_bad_files(files: dict[str, Path], tmp_path: Path) -> None:
    tok = HFFileTokenizer.from_file(files["metaspace"])
    tok.save(tmp_path / "run-tokenizer.json")
    back = load_tokenizer(tmp_path / "run-tokenizer.json")
    assert isinstance(back, HFFileTokenizer) and back.fingerprint() == tok.fingerprint()
    assert back.encode("Hello there") == tok.encode("Hello there")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"model": {"type": "Nope"}}))
    with pytest.raises(ValueError, match="broken.json: not a Hugging Face tokenizer.json"):
        HFFileTokenizer.from_file(broken)


def test_prepared_splits_count_every_byte(files: dict[str, Path], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    spec = validate_spec({"data": {"path": str(corpus), "val_fraction": 0.2},
                          "tokenizer": {"kind": "hf", "path": str(files["wordpiece"])}}, "x")
    splits = load_splits(prepare_data(spec, tmp_path / "cache"))
    assert len(splits["val"]) > 0 and len(splits["train"]) > 4 * len(splits["val"])
    assert all(split.byte_counts is not None for split in splits.values())  # WordPiece: bytes depend on context
    total = sum(int(np.asarray(split.byte_counts, dtype=np.int64).sum()) for split in splits.values())
    assert total == len(TEXT.encode("utf-8"))


def test_gptexp_run_trains_with_a_gpt2_style_file_and_reports_bpb(files: dict[str, Path], tmp_path: Path, runs_dir: Path) -> None:
    import yaml

    spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    spec["tokenizer"] = {"kind": "hf", "path": str(files["gpt2"])}
    spec["train"].update(max_steps=6, eval_every=6, checkpoint_every=6)
    path = tmp_path / "hf.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_cli(["run", str(path), "--runs-dir", str(runs_dir)])
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = next(d for d in runs_dir.iterdir() if not d.name.startswith("."))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["val/bpb"] < 20
    assert json.loads((run_dir / "tokenizer.json").read_text())["kind"] == "hf"

    spec["objective"] = {"kind": "mlm"}
    path.write_text(yaml.safe_dump(spec))
    refused = run_cli(["run", str(path), "--runs-dir", str(runs_dir)])
    assert refused.returncode == 2 and "needs a mask token" in refused.stderr, refused.stderr
    spec["objective"] = {"kind": "clm"}
    spec["tokenizer"]["path"] = str(tmp_path / "missing.json")
    path.write_text(yaml.safe_dump(spec))
    missing = run_cli(["run", str(path), "--runs-dir", str(runs_dir)])
    assert missing.returncode == 2 and "missing.json: no such file" in missing.stderr, missing.stderr


def test_tokenizer_files_that_are_fifos_or_devices_are_refused_at_once(tmp_path: Path) -> None:
    """Both loaders go through regular_file: a FIFO without a writer or /dev/zero would hang them."""
    import os
    import threading

    from gptexp.tokenizers import TokenizerFileError

    fifo = tmp_path / "tokenizer.json"
    os.mkfifo(fifo)
    messages: list[str] = []

    def load_all() -> None:
        for load in (load_tokenizer, HFFileTokenizer.from_file):
            for path in (fifo, Path("/dev/zero"), tmp_path):
                with pytest.raises(TokenizerFileError) as info:
                    load(path)
                messages.append(str(info.value))

    loader = threading.Thread(target=load_all, daemon=True)
    loader.start()
    loader.join(timeout=20)
    assert messages == [f"{fifo}: not a regular file", "/dev/zero: not a regular file",
                        f"{tmp_path}: is a directory, not a tokenizer file"] * 2
