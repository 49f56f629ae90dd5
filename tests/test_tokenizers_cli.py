"""`gptexp tokenizer train | export-hf`, driven through typer's CliRunner and once as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptexp.tokenizers import load_tokenizer
from gptexp.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "tinyshakespeare.txt"

runner = CliRunner()


@pytest.fixture()
def small_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(CORPUS.read_text(encoding="utf-8")[:30_000] + "\nnaïve 😀 日本\n", encoding="utf-8")
    return path


def _assert_bad_input(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert "error:" in result.output


def test_train_bpe_and_export(tmp_path, small_corpus):
    out = tmp_path / "out" / "tok.json"
    result = runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--kind", "bpe", "--vocab-size", "400", "--pattern", "gpt2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "vocab size 400" in result.output and "merges 139" in result.output and " s -> " in result.output
    tok = load_tokenizer(out)
    assert tok.kind == "bpe" and tok.pattern == "gpt2" and tok.vocab_size == 400

    hf_out = tmp_path / "hf.json"
    result = runner.invoke(app, ["tokenizer", "export-hf", str(out), "--out", str(hf_out)])
    assert result.exit_code == 0, result.output
    assert json.loads(hf_out.read_text(encoding="utf-8"))["model"]["type"] == "BPE"


def test_train_char(tmp_path, small_corpus):
    out = tmp_path / "char.json"
    result = runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--kind", "char", "--out", str(out)])
    assert result.exit_code == 0, result.output
    tok = load_tokenizer(out)
    assert tok.kind == "char"
    text = small_corpus.read_text(encoding="utf-8")
    assert tok.decode(tok.encode(text)) == text


def test_bad_corpus_inputs(tmp_path):
    out = str(tmp_path / "tok.json")
    result = runner.invoke(app, ["tokenizer", "train", str(tmp_path / "missing.txt"), "--out", out])
    _assert_bad_input(result, "missing.txt", "no such file")
    result = runner.invoke(app, ["tokenizer", "train", str(tmp_path), "--out", out])
    _assert_bad_input(result, str(tmp_path), "directory")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"ok\xff\xfe\x00")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(binary), "--out", out]), "binary.txt", "not UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(empty), "--out", out]), "empty.txt", "empty")
    assert not (tmp_path / "tok.json").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can read any file")
def test_unreadable_corpus(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("abc")
    path.chmod(0)
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(path), "--out", str(tmp_path / "t.json")]), "secret.txt", "cannot read")


def test_bad_flags(tmp_path, small_corpus):
    out = str(tmp_path / "tok.json")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", "100", "--out", out]), "--vocab-size 100")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", "-5", "--out", out]), "too small")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", str(10**12), "--out", out]),
                      "at most 1048576")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--kind", "word", "--out", out]), "--kind")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--pattern", "gpt9", "--out", out]), "--pattern")
    # not an integer: typer's own usage error, still exit 2
    assert runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", "lots", "--out", out]).exit_code == 2


def test_export_broken_tokenizer_files(tmp_path, small_corpus):
    good = tmp_path / "good.json"
    assert runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", "300", "--out", str(good)]).exit_code == 0
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(good.read_bytes()[:200])
    out = str(tmp_path / "hf.json")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "export-hf", str(truncated), "--out", out]), "truncated.json", "not valid JSON")
    d = json.loads(good.read_text())
    d["version"] = 7
    future = tmp_path / "future.json"
    future.write_text(json.dumps(d))
    _assert_bad_input(runner.invoke(app, ["tokenizer", "export-hf", str(future), "--out", out]), "future.json", "version 7")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "export-hf", str(tmp_path / "nope.json"), "--out", out]), "nope.json")
    _assert_bad_input(runner.invoke(app, ["tokenizer", "export-hf", str(tmp_path), "--out", out]), "directory")
    assert not Path(out).exists()


def test_real_process(tmp_path):
    """Run the command in a fresh interpreter: plain (non-terminal) output, exit codes."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(CORPUS.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    out = tmp_path / "tok.json"
    cmd = [sys.executable, "-m", "gptexp.cli", "tokenizer"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*cmd, "train", str(corpus), "--vocab-size", "300", "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "vocab size 300" in done.stdout and "merges 39" in done.stdout
    assert load_tokenizer(out).vocab_size == 300
    bad = subprocess.run(
        [*cmd, "train", str(tmp_path / "missing.txt"), "--out", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert bad.returncode == 2
    assert "missing.txt" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_progress_bar_on_a_terminal(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat the output as a terminal
    out = tmp_path / "tok.json"
    result = runner.invoke(app, ["tokenizer", "train", str(small_corpus), "--vocab-size", "300", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "39/39" in result.output  # the rich bar's final "done/total"
    assert load_tokenizer(out).vocab_size == 300


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_export_hf_tells_transformers_every_special_token(tmp_path, small_corpus, kind, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "tok.json"
    args = ["tokenizer", "train", str(small_corpus), "--out", str(out), "--kind", kind]
    assert runner.invoke(app, args + (["--vocab-size", "300"] if kind == "bpe" else [])).exit_code == 0
    hf_dir = tmp_path / "hf"
    result = runner.invoke(app, ["tokenizer", "export-hf", str(out), "--out", str(hf_dir / "tokenizer.json")])
    assert result.exit_code == 0, result.output
    assert "special_tokens_map.json" in result.output and "tokenizer_config.json" in result.output
    ours = load_tokenizer(out)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    specials = ours.special_tokens
    assert (hf_tok.pad_token, hf_tok.unk_token, hf_tok.bos_token, hf_tok.eos_token, hf_tok.mask_token) == (
        "<pad>", "<unk>", "<bos>", "<eos>", "<mask>")
    assert hf_tok.mask_token_id == specials["<mask>"] and hf_tok.pad_token_id == specials["<pad>"]
    batch = hf_tok(["the", "the quick brown fox"], padding=True, add_special_tokens=False)
    short, long = batch["input_ids"]
    assert len(short) == len(long) and short[-1] == specials["<pad>"] and batch["attention_mask"][0][-1] == 0
    # transformers, like HF tokenizers, reads a literal <mask> as the mask token (our allow_special=True);
    # gptexp's plain encode reads it as text
    text = "the <mask> fox"
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text, allow_special=True)
    assert specials["<mask>"] not in ours.encode(text)
