"""`gptexp study` end to end: a tiny study runs, is killed hard mid-run, and finishes on rerun."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from tests.conftest import CORPUS, run_cli, start_cli, wait_for


def tiny_study(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(CORPUS.read_bytes()[:40_000])
    study = {
        "name": "tiny",
        "seed": 5,
        "seeds": [1],
        "base": {"data": {"path": str(corpus), "val_fraction": 0.1, "test_fraction": 0.05},
                 "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "positions": "rope"},
                 "objective": {"kind": "mlm"}, "optim": {"lr": 3.0e-3, "warmup_steps": 2},
                 # Evaluating every step paces the tiny runs (tens of ms a step), so the test's
                 # SIGKILL always lands mid-run; unpaced, 40 steps could end between two polls.
                 "train": {"batch_size": 4, "max_steps": 40, "eval_every": 1, "eval_batches": 20,
                           "checkpoint_every": 2, "log_every": 10},
                 "tracking": {"wandb": {"mode": "disabled"}}},
        "arms": {
            "char_tail": {"seeds": 1, "set": {"tokenizer": {"kind": "char"}, "model": {"block_size": 32},
                                              "objective": {"mask_unit": "word_tail"}}},
            "bpe_tail": {"seeds": 1, "set": {"tokenizer": {"kind": "bpe", "vocab_size": 300}, "model": {"block_size": 16},
                                             "objective": {"mask_unit": "word_tail"}}},
        },
        "tune": {"grid": {"optim.lr": [3.0e-3]}},
        "evaluation": {"max_spans": 6},
        "budget": {"context_bytes_tolerance": 1.0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def test_study_runs_resumes_after_a_kill_and_writes_the_results(tmp_path, runs_dir):
    study = tiny_study(tmp_path)
    first = start_cli(["study", str(study), "--runs-dir", str(runs_dir)])
    status = runs_dir / "tiny-char_tail-s1" / "status.json"

    def mid_run() -> bool:
        state = json.loads(status.read_text()) if status.exists() else {}
        return state.get("status") == "running" and state.get("checkpoint_step", 0) >= 2
    try:
        wait_for(mid_run, 120, "the first final run to write a checkpoint")
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no chance to clean up: the rerun must cope
        first.wait(10)
    # A run stopped while its workers were starting reads as failed: the rerun must continue it too.
    # (The arms run in file order: bpe_tail's run finished before char_tail's was killed.)
    from gptexp.tracking import RunStore

    RunStore(runs_dir / "tiny-bpe_tail-s1").write_status(
        "failed", error="workers stopped without recording an outcome (signal SIGTERM)")

    second = run_cli(["study", str(study), "--runs-dir", str(runs_dir)], timeout=240)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming run tiny-char_tail-s1" in second.stdout
    assert "resuming run tiny-bpe_tail-s1 (failed)" in second.stdout

    results = json.loads((runs_dir / "studies" / "tiny" / "results.json").read_text())
    assert results["study"] == "tiny" and set(results["arms"]) == {"char_tail", "bpe_tail"}
    arm = results["arms"]["bpe_tail"]
    assert (arm["tokenizer"], arm["objective"], arm["mask_unit"]) == ("bpe", "mlm", "word_tail")
    assert arm["best_params"] == {"optim.lr": 3.0e-3}
    run = arm["runs"][0]
    assert run["seed"] == 1 and run["run_id"] == "tiny-bpe_tail-s1"
    for key in ("val/bpb", "val/hw_l2r_bpb", "val/pll_bpb", "val/pll_l2r_bpb", "test/pll_l2r_bpb"):
        assert 0 < run["metrics"][key] < 20 and arm["mean"][key] == run["metrics"][key]
    # both arms were scored on the same hidden words
    char_words = results["arms"]["char_tail"]["runs"][0]["metrics"]["val/hidden_bytes"]
    assert char_words == run["metrics"]["val/hidden_bytes"] > 0
    assert isinstance(results["comparisons"], list) and isinstance(results["answer"], str)
    for name in ("report.md", "report.html", "plots/bits_by_position.png"):
        assert (runs_dir / "studies" / "tiny" / name).stat().st_size > 0
    resumed = json.loads(status.read_text())
    assert resumed["status"] == "completed"

    shown = run_cli(["study", "status", "tiny", "--runs-dir", str(runs_dir)])
    assert shown.returncode == 0 and shown.stdout.count("scored") == 2 and "report" in shown.stdout
    again = run_cli(["study", str(study), "--runs-dir", str(runs_dir)])  # all done: nothing is retrained
    assert again.returncode == 0 and "run tiny-" not in again.stdout.replace("report", "")
    evaluated = run_cli(["eval", "tiny-char_tail-s1", "--runs-dir", str(runs_dir), "--metric", "pll_l2r"])
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["val/pll_l2r_bpb"] > 0


@pytest.mark.parametrize("edit, message", [
    ({"arms": {"only": {"seeds": 1, "set": {}}}}, "arms"),
    ({"seeds": [1, 1]}, "seeds must be distinct"),
    ({"budget": {"context_bytes_tolerance": 0.01}}, "bytes of context per window differ"),  # char 32 vs BPE 16 tokens
])
def test_bad_study_exits_2_with_one_line(tmp_path, runs_dir, edit, message):
    raw = yaml.safe_load(tiny_study(tmp_path).read_text())
    raw.update(edit)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_cli(["study", str(path), "--runs-dir", str(runs_dir)])
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
