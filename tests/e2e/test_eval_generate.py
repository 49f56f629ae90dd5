"""`gptexp eval` and `gptexp generate` on a real trained run, and what "a byte" means in val/bpb."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from gptexp.objectives import TokenInfo, Window, make_batch
from gptexp.spec import ClmSpec, MlmSpec
from gptexp.tokenizers import train_tokenizer
from tests.conftest import CORPUS, run_cli

pytestmark = pytest.mark.slow

NON_ASCII = "Ünïcödé — naïve café, 東京 and emoji 🎭! " * 20


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny clm run and one tiny mlm run (BPE), trained for real."""
    runs = tmp_path_factory.mktemp("runs")
    common = ["--set", "model.n_layer=1", "--set", "model.n_embd=32", "--set", "model.n_head=2",
              "--set", "model.block_size=32", "--set", "train.batch_size=8", "--set", "train.max_steps=30",
              "--set", "train.eval_every=30", "--set", "train.eval_batches=2", "--set", "tracking.wandb.mode=disabled",
              "--set", "launch.nproc=1", "--runs-dir", str(runs)]
    clm = run_cli(["run", "experiments/clm_char.yaml", "--name", "clm", *common])
    assert clm.returncode == 0, clm.stdout + clm.stderr
    mlm = run_cli(["run", "experiments/mlm_bpe.yaml", "--name", "mlm", "--set", "tokenizer.vocab_size=300", *common])
    assert mlm.returncode == 0, mlm.stdout + mlm.stderr
    return {"clm": next(runs.glob("clm-*")), "mlm": next(runs.glob("mlm-*")), "runs": runs}


def test_eval_on_text_with_unseen_characters(trained_runs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "odd.txt"
    data.write_text(NON_ASCII, encoding="utf-8")
    result = run_cli(["eval", trained_runs["clm"].name, "--data", str(data), "--runs-dir", str(trained_runs["runs"])])
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) >= {"val/loss", "val/bpb", "val/acc"}
    assert metrics["unknown_tokens"] > 0  # 東京, 🎭 and friends never occur in Shakespeare
    assert math.isfinite(metrics["val/bpb"]) and metrics["val/bpb"] > 0
    # Every predicted token counts the UTF-8 bytes it stands for, from the tokenizer's byte table (as
    # in training); <unk> is a special token and stands for none, so fewer bytes than the text's count.
    assert 0 < metrics["bytes"] < len(NON_ASCII.encode("utf-8"))
    assert math.isclose(metrics["val/bpb"], metrics["val/loss"] * metrics["tokens"] / (math.log(2) * metrics["bytes"]), rel_tol=1e-9)


def test_eval_of_a_masked_model_on_the_corpus_is_repeatable(trained_runs: dict[str, Path]) -> None:
    args = ["eval", str(trained_runs["mlm"]), "--data", str(CORPUS), "--batches", "3", "--runs-dir", str(trained_runs["runs"])]
    first, second = run_cli(args), run_cli(args)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert json.loads(first.stdout)["batches"] == 3


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_eval_refuses_a_fifo_or_a_device_as_data_at_once(trained_runs: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """Reading a FIFO with no writer blocks for ever; /dev/zero reads until memory runs out."""
    if kind == "fifo":
        data = tmp_path / "pipe"
        os.mkfifo(data)
    else:
        data = Path("/dev/zero")
    result = run_cli(["eval", trained_runs["clm"].name, "--data", str(data), "--runs-dir", str(trained_runs["runs"])],
                     timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: --data: {data}: not a regular file (FIFOs, devices and sockets cannot be read as a corpus)"


def test_generate_greedy_with_and_without_cache(trained_runs: dict[str, Path]) -> None:
    base = ["generate", trained_runs["clm"].name, "--prompt", "ROMEO:", "--max-new-tokens", "50",
            "--temperature", "0", "--runs-dir", str(trained_runs["runs"])]
    cached, uncached = run_cli(base), run_cli(base + ["--no-cache"])
    assert cached.returncode == 0, cached.stderr
    assert cached.stdout.startswith("ROMEO:")
    assert cached.stdout == uncached.stdout
    sampled = [run_cli(base[:-4] + ["--temperature", "1.0", "--seed", str(s), "--runs-dir", str(trained_runs["runs"])]).stdout
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_generate_refuses_a_masked_model(trained_runs: dict[str, Path]) -> None:
    result = run_cli(["generate", trained_runs["mlm"].name, "--runs-dir", str(trained_runs["runs"])])
    assert result.returncode == 2 and "needs a causal model" in result.stderr


def test_char_and_bpe_count_the_same_bytes_of_non_ascii_text() -> None:
    train_text = CORPUS.read_text(encoding="utf-8")[:20000] + NON_ASCII[:40]
    char = train_tokenizer(train_text, kind="char")
    bpe = train_tokenizer(train_text, kind="bpe", vocab_size=400, pattern="gpt4")
    text = NON_ASCII + "unseen: ẞ ☃ 😀"
    total = len(text.encode("utf-8"))
    for tokenizer in (char, bpe):
        encoded = tokenizer.encode_for_training(text)
        assert int(encoded.byte_counts.sum()) == total, tokenizer.kind
        ids = torch.as_tensor(encoded.ids, dtype=torch.long)[None]
        window = Window(ids=ids, byte_counts=torch.as_tensor(encoded.byte_counts, dtype=torch.long)[None],
                        word_starts=torch.as_tensor(encoded.word_starts)[None])
        info = TokenInfo(tokenizer.vocab_size, tuple(tokenizer.special_tokens.values()),
                         tokenizer.special_tokens["<mask>"], tokenizer.special_tokens["<pad>"])
        # CLM predicts every token but the first: the bytes counted are the text minus its first token.
        clm = make_batch(ClmSpec(), window, info, torch.Generator().manual_seed(0))
        assert int(clm.label_bytes.sum()) == total - int(encoded.byte_counts[0])
        # Word masking hides whole words; the bytes counted are exactly the hidden words' bytes.
        mlm = make_batch(MlmSpec(mask_prob=0.3, mask_unit="word"), window, info, torch.Generator().manual_seed(0))
        hidden = mlm.labels != -100
        assert int(mlm.label_bytes[hidden].sum()) == int(window.byte_counts[0, :-1][hidden[0]].sum())
