"""Custom components by import path, end to end: a model (and objective) defined in a package
outside the repository trains under torchrun with 2 ranks, resumes after a crash, is swept over one
of its args, evaluates and generates; an installed package's entry point gives it a kind name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import CORPUS, REPO_ROOT, TINY_SPEC, run_cli
from gptexp.sweep.storage import default_storage_url, open_storage

pytestmark = pytest.mark.slow

MODELS_PY = '''
"""A model gptexp does not know: token embedding -> causal running mean -> MLP -> logits."""
import os

import torch
from pydantic import BaseModel, Field
from torch import nn
from torch.nn import functional as F


class TinyMean(nn.Module):
    class Args(BaseModel):
        d_hidden: int = Field(16, gt=0)

    def __init__(self, vocab_size, block_size, causal, d_hidden=16):
        super().__init__()
        self.block_size, self.causal = block_size, causal
        self.embed = nn.Embedding(vocab_size, d_hidden)
        self.mlp = nn.Sequential(nn.Linear(2 * d_hidden, d_hidden), nn.GELU(), nn.Linear(d_hidden, vocab_size))
        self.forwards = 0
        self.crash_at = int(os.environ.get("TINYLAB_CRASH_AT", "0"))  # the test's way to crash a run

    def forward(self, idx, targets=None):
        if self.training:
            self.forwards += 1
            if self.crash_at and self.forwards == self.crash_at:
                raise RuntimeError("tinylab: crash asked for by the test")
        x = self.embed(idx)  # (B, T, C)
        counts = torch.arange(1, idx.size(1) + 1, device=idx.device)[None, :, None]
        context = x.cumsum(1) / counts  # mean of tokens 0..t: causal by construction
        logits = self.mlp(torch.cat((x, context), dim=-1))
        loss = None if targets is None else F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss


class Plain(nn.Module):
    """No Args model: args bind to the signature."""

    def __init__(self, vocab_size, block_size, causal, width=8):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.table(idx)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss


class NotAModel:
    def __init__(self, vocab_size, block_size, causal):
        pass


class ShiftedClm:
    """A custom objective: next-token prediction that skips the first `skip` positions."""

    def __init__(self, skip=0):
        self.causal = True
        self.skip = skip

    def make_batch(self, window, info, generator):
        from gptexp.objectives import Batch

        labels = window.ids[:, 1:].clone()
        labels[:, : self.skip] = -100
        label_bytes = window.byte_counts[:, 1:].masked_fill(labels == -100, 0)
        return Batch(inputs=window.ids[:, :-1], labels=labels, label_bytes=label_bytes)
'''


def write_lab(root: Path) -> Path:
    """The package `tinylab` in root (a directory outside the repository)."""
    package = root / "tinylab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODELS_PY)
    return root


def custom_spec(lab: Path, **model: object) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    spec["model"] = {"kind": "custom", "target": "tinylab.models:TinyMean", "block_size": 32, "args": {"d_hidden": 16}, **model}
    spec["train"].update(max_steps=20, eval_every=10, checkpoint_every=10, log_every=5)
    path = lab / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_custom_model_trains_on_two_ranks_resumes_evaluates_and_generates(tmp_path: Path, runs_dir: Path) -> None:
    lab = write_lab(tmp_path / "lab")
    spec = custom_spec(lab)
    # Started in the lab directory: that is where tinylab is found. Rank 0 crashes at step 15.
    crashed = run_cli(["run", str(spec), "--nproc", "2", "--runs-dir", str(runs_dir)], cwd=lab,
                      env={"TINYLAB_CRASH_AT": "15"})
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    run_dir = next(d for d in runs_dir.iterdir() if not d.name.startswith("."))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert "crash asked for by the test" in (run_dir / "status.json").read_text()

    record = json.loads((run_dir / "components.json").read_text())
    model_py = lab / "tinylab" / "models.py"
    assert record["model"]["target"] == "tinylab.models:TinyMean"
    assert record["model"]["file"] == str(model_py.resolve())
    import hashlib
    assert record["model"]["sha256"] == hashlib.sha256(model_py.read_bytes()).hexdigest()
    assert record["model"]["start_dir"] == str(lab.resolve())

    # Resumed from the repository root: the run knows where its model came from.
    resumed = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs_dir)], cwd=REPO_ROOT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["world_size"] == 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val/bpb" in r]
    assert [r["step"] for r in evals] == [0, 10, 20]
    assert evals[-1]["val/bpb"] < evals[0]["val/bpb"]  # it learns
    # parameters: embed (V x 16) + Linear(32, 16) + Linear(16, V), counted without a num_parameters()
    vocab = len(json.loads((run_dir / "tokenizer.json").read_text())["chars"]) + 5
    assert summary["parameters"] == vocab * 16 + (32 * 16 + 16) + (16 * vocab + vocab)

    evaluated = run_cli(["eval", run_dir.name, "--data", str(CORPUS), "--batches", "2", "--runs-dir", str(runs_dir)],
                        cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert 0 < json.loads(evaluated.stdout)["val/bpb"] < 8
    generated = run_cli(["generate", run_dir.name, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--temperature", "0",
                         "--runs-dir", str(runs_dir)], cwd=tmp_path)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert generated.stdout.startswith("ROMEO:") and len(generated.stdout.strip()) >= len("ROMEO:") + 10


def test_a_sweep_searches_a_custom_models_args(tmp_path: Path, runs_dir: Path) -> None:
    lab = write_lab(tmp_path / "lab")
    experiment = custom_spec(lab)
    sweep = {"experiment": str(experiment), "overrides": {"train": {"max_steps": 6, "eval_every": 3}},
             "space": {"model.args.d_hidden": {"choices": [8, 24]}},
             "sampler": {"kind": "grid"}, "pruner": {"kind": "none"}, "n_trials": 2, "study": "custom-args"}
    (lab / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    result = run_cli(["sweep", str(lab / "sweep.yaml"), "--runs-dir", str(runs_dir)], cwd=lab)
    assert result.returncode == 0, result.stdout + result.stderr
    study = optuna.load_study(study_name="custom-args", storage=open_storage(default_storage_url(runs_dir)))
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["model.args.d_hidden"] for t in trials) == [8, 24]
    widths = set()
    for trial in trials:
        run_dir = runs_dir / trial.user_attrs["run_id"]
        widths.add(yaml.safe_load((run_dir / "spec.yaml").read_text())["model"]["args"]["d_hidden"])
    assert widths == {8, 24}


@pytest.mark.parametrize("model, message", [
    ({"target": "nolab.models:TinyMean"}, "no module 'nolab' among the installed packages or in"),
    ({"args": {"d_hidden": "wide"}}, "args.d_hidden: Input should be a valid integer"),
])
def test_a_bad_target_or_bad_args_exit_2_with_one_line(tmp_path: Path, runs_dir: Path, model: dict, message: str) -> None:
    lab = write_lab(tmp_path / "lab")
    spec = custom_spec(lab, **model)
    result = run_cli(["run", str(spec), "--runs-dir", str(runs_dir)], cwd=lab)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not [d for d in runs_dir.iterdir() if not d.name.startswith(".")]  # nothing started


def test_a_custom_objective_and_an_entry_point_kind_from_a_pip_installed_package(tmp_path: Path, runs_dir: Path) -> None:
    source = write_lab(tmp_path / "src")
    (source / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tinylab"
        version = "0.3.1"
        [project.entry-points."gptexp.components"]
        "model.tinymean" = "tinylab.models:TinyMean"
        "objective.shifted" = "tinylab.models:ShiftedClm"
        [tool.setuptools]
        packages = ["tinylab"]
    '''))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(source)], check=True, capture_output=True, timeout=180)
    spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    spec["model"] = {"kind": "tinymean", "block_size": 32, "args": {"d_hidden": 8}}
    spec["objective"] = {"kind": "shifted", "args": {"skip": 4}}
    spec["train"].update(max_steps=4, eval_every=4, checkpoint_every=4)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec))
    # Run from an unrelated directory: only the installed package can provide tinylab.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    result = run_cli(["run", str(path), "--runs-dir", str(runs_dir)], cwd=elsewhere, env={"PYTHONPATH": pythonpath})
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = next(d for d in runs_dir.iterdir() if not d.name.startswith("."))
    recorded = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert recorded["model"] == {"kind": "custom", "target": "tinylab.models:TinyMean", "block_size": 32, "args": {"d_hidden": 8}}
    assert recorded["objective"] == {"kind": "custom", "target": "tinylab.models:ShiftedClm", "args": {"skip": 4}}
    record = json.loads((run_dir / "components.json").read_text())
    assert record["model"]["version"] == "tinylab 0.3.1"
    assert record["objective"]["file"].startswith(str(site))
