"""A fixture run store, written through tracking.RunStore the way the trainer writes one.

    store = make_run_store(tmp_path)          # 2 char + 2 bpe completed MLM runs (two seeds each),
    store.runs["bpe-live"].expected_status    # one 'running' run whose processes are gone -> 'crashed',
    study = make_study()                      # one failed run; plus an Optuna study of a few trials

Every value a test checks is computed here once (FixtureRun.final), so the tests compare the
report against these numbers, not against the report's own arithmetic.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from gptexp.tracking import RunStore, pid_alive

GROUP = "mlm_bpe_vs_char"
BATCH_TOKENS = 64 * 128  # batch_size × block_size: tokens per step
BYTES_PER_TOKEN = {"char": 1.0, "bpe": 3.2}
VOCAB = {"char": 65, "bpe": 2048}
EVAL_EVERY, TRAIN_EVERY = 50, 10
# Bits per byte of an untrained model: log2(vocab) spread over the bytes of one token.
START_BPB = {kind: math.log2(VOCAB[kind]) / BYTES_PER_TOKEN[kind] for kind in VOCAB}
PARAMETERS = {"char": 208_641, "bpe": 339_200}  # the embedding table grows with the vocabulary
T0 = 1_700_000_000.0  # the trainer logs wall-clock time
SECONDS_PER_STEP = 0.25
HOSTILE_NAME = 'mlm char <b onmouseover="x()">&amp; $\\alpha$ | [link](javascript:1)'
HOSTILE_ERROR = "RuntimeError: loss is NaN at step 100 <script>alert('pwned')</script> & more"


@dataclass
class FixtureRun:
    run_id: str
    name: str
    tokenizer: str
    seed: int
    steps: int  # the last step logged
    expected_status: str  # what RunRecord.status must say
    final: dict[str, Any]  # the values the report must show (summary, or the last metrics rows)
    has_summary: bool
    error: str | None = None
    parameters: int | None = None


@dataclass
class FixtureStore:
    runs_dir: Path
    runs: dict[str, FixtureRun] = field(default_factory=dict)

    def completed(self, tokenizer: str) -> list[FixtureRun]:
        return [r for r in self.runs.values()
                if r.expected_status == "completed" and r.tokenizer == tokenizer]


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped: no process has it (until reuse)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _spec(name: str, tokenizer: str, seed: int, steps: int, tags: list[str]) -> dict[str, Any]:
    return {
        "name": name, "seed": seed,
        "data": {"path": "data/tinyshakespeare.txt", "val_fraction": 0.1, "test_fraction": 0.0},
        "tokenizer": {"kind": tokenizer, "vocab_size": VOCAB[tokenizer], "pattern": "gpt4",
                      "special_tokens": ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]},
        "model": {"kind": "gpt", "n_layer": 4, "n_head": 8, "n_embd": 64, "block_size": 128,
                  "dropout": 0.1, "positions": "rope", "mlp": "gelu", "tie_embeddings": True},
        "objective": {"kind": "mlm", "mask_prob": 0.15, "mask_unit": "word"},
        "optim": {"lr": 1.0e-3, "min_lr": 1.0e-5, "weight_decay": 0.1, "betas": [0.9, 0.95],
                  "grad_clip": 1.0, "warmup_steps": 100, "schedule": "cosine"},
        "dropout_schedule": {"kind": "constant"},
        "train": {"batch_size": 64, "max_steps": steps, "grad_accum": 1, "eval_every": EVAL_EVERY,
                  "eval_batches": 20, "checkpoint_every": 500, "precision": "fp32",
                  "compile": False, "device": "auto"},
        "launch": {"nproc": 1, "nnodes": 1, "backend": "auto"},
        "tracking": {"wandb": {"mode": "offline", "project": "gptexp", "group": GROUP, "tags": tags}},
    }


def curve_rows(tokenizer: str, final_bpb: float, max_steps: int, last_step: int) -> list[dict[str, Any]]:
    """metrics.jsonl rows: eval every 50 steps (step 0 too), train every 10, up to `last_step`.

    val/bpb falls from START_BPB to `final_bpb` at `max_steps` along (1 - step/max_steps)².
    """
    bytes_per_token = BYTES_PER_TOKEN[tokenizer]
    start = START_BPB[tokenizer]
    rows = []
    for step in range(0, last_step + 1):
        tokens = step * BATCH_TOKENS
        common = {"step": step, "time": T0 + step * SECONDS_PER_STEP, "tokens_seen": tokens,
                  "bytes_seen": int(tokens * bytes_per_token)}
        bpb = final_bpb + (start - final_bpb) * (1 - step / max_steps) ** 2
        loss = bpb * math.log(2) * bytes_per_token  # nats per token
        if step > 0 and step % TRAIN_EVERY == 0:
            rows.append({**common, "train/loss": round(loss * 0.97, 6), "lr": 1e-3, "dropout": 0.1,
                         "tokens_per_sec": 30000.0 + step})
        if step % EVAL_EVERY == 0:
            rows.append({**common, "val/loss": round(loss, 6), "val/bpb": round(bpb, 6),
                         "val/acc": round(0.05 + (final_acc(final_bpb) - 0.05) * step / max_steps, 6)})
    return rows


def final_acc(final_bpb: float) -> float:
    """Accuracy at the end of training, tied to the bpb so every run's differs: 2.10 -> 0.39."""
    return round(0.6 - 0.1 * final_bpb, 6)


def write_run(runs_dir: Path, run_id: str, *, name: str, tokenizer: str, seed: int,
              final_bpb: float, max_steps: int = 300, last_step: int | None = None,
              status: str = "completed", error: str | None = None, pid: int | None = None,
              summary: bool = True, study: str | None = None, trial: int | None = None,
              parameters: int | None = None) -> FixtureRun:
    """One run directory: spec.yaml, status.json, metrics.jsonl and (if `summary`) summary.json."""
    last_step = max_steps if last_step is None else last_step
    parameters = PARAMETERS[tokenizer] if parameters is None else parameters
    store = RunStore(runs_dir / run_id)
    store.dir.mkdir(parents=True)
    tags = [f"study:{study}", f"trial:{trial}"] if study is not None else []
    spec = _spec(name, tokenizer, seed, max_steps, tags)
    if study is not None:
        spec["tracking"]["wandb"]["group"] = study
    store.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    rows = curve_rows(tokenizer, final_bpb, max_steps, last_step)
    for row in rows:
        store.append_metrics(row)
    status_fields: dict[str, Any] = {"step": last_step}
    if pid is not None:
        status_fields.update(launcher_pid=pid, worker_pid=pid)
    if error is not None:
        status_fields["error"] = error
    store.write_status(status, **status_fields)

    last_eval = [r for r in rows if "val/bpb" in r][-1]
    last_train = [r for r in rows if "train/loss" in r][-1]
    final = {
        "val/bpb": last_eval["val/bpb"], "val/loss": last_eval["val/loss"],
        "val/acc": last_eval["val/acc"], "train/loss": last_train["train/loss"],
        "steps": last_step, "tokens_seen": rows[-1]["tokens_seen"],
        "bytes_seen": rows[-1]["bytes_seen"], "tokens_per_sec": last_train["tokens_per_sec"],
        "wall_time_s": last_step * SECONDS_PER_STEP, "parameters": None,
    }
    if summary:
        final["parameters"] = parameters
        final["tokens_per_sec"] = 31234.5  # the summary's own average, not the last row's
        final["wall_time_s"] = last_step * SECONDS_PER_STEP + 3.5  # includes start-up
        store.write_summary({
            "run_id": run_id, "name": name, "status": status, "group": spec["tracking"]["wandb"]["group"],
            "world_size": 1, "parameters": parameters, "steps": last_step,
            "tokens_seen": final["tokens_seen"], "bytes_seen": final["bytes_seen"],
            "wall_time_s": final["wall_time_s"], "tokens_per_sec": final["tokens_per_sec"],
            "val/loss": final["val/loss"], "val/bpb": final["val/bpb"], "val/acc": final["val/acc"],
            "train/loss": final["train/loss"], "best/val/bpb": final["val/bpb"],
            "best/step": last_step, "git_commit": "0123abc", "versions": {"torch": "2.5.0"},
            "study": study, "trial": trial,
        })
    expected = "crashed" if status == "running" and pid is not None and not pid_alive(pid) else status
    return FixtureRun(run_id, name, tokenizer, seed, last_step, expected, final, summary, error,
                      parameters if summary else None)


# Final val/bpb of the completed runs: char ≈ 2.12 ± 0.028, bpe ≈ 1.93 ± 0.042 (sample std).
COMPLETED = (
    ("char-s1", "mlm_char", "char", 1, 2.10),
    ("char-s2", HOSTILE_NAME, "char", 2, 2.14),
    ("bpe-s1", "mlm_bpe", "bpe", 1, 1.90),
    ("bpe-s2", "mlm_bpe", "bpe", 2, 1.96),
)


def make_run_store(root: Path) -> FixtureStore:
    """Six runs under root/runs: four completed, one crashed mid-run, one failed."""
    store = FixtureStore(root / "runs")
    store.runs_dir.mkdir(parents=True)
    for run_id, name, tokenizer, seed, bpb in COMPLETED:
        store.runs[run_id] = write_run(store.runs_dir, run_id, name=name, tokenizer=tokenizer,
                                       seed=seed, final_bpb=bpb)
    store.runs["bpe-live"] = write_run(  # 'running', but its processes are gone: crashed
        store.runs_dir, "bpe-live", name="mlm_bpe", tokenizer="bpe", seed=3, final_bpb=1.80,
        last_step=170, status="running", pid=dead_pid(), summary=False)
    store.runs["char-bad"] = write_run(
        store.runs_dir, "char-bad", name="mlm_char", tokenizer="char", seed=3, final_bpb=2.0,
        last_step=100, status="failed", error=HOSTILE_ERROR, summary=False)
    return store


def make_study(storage: str | None = None, name: str = GROUP, n_complete: int = 5):
    """An Optuna study (in memory unless `storage`) with `n_complete` completed trials over
    tokenizer.kind, optim.lr and model.n_layer, plus one pruned and one failed trial."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    distributions = {"tokenizer.kind": CategoricalDistribution(["char", "bpe"]),
                     "optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
                     "model.n_layer": IntDistribution(2, 6)}
    for number in range(n_complete):
        kind = "bpe" if number % 2 else "char"
        lr = 1e-4 * 10 ** (2 * number / max(1, n_complete - 1))
        params = {"tokenizer.kind": kind, "optim.lr": lr, "model.n_layer": 2 + number % 5}
        value = (1.9 if kind == "bpe" else 2.1) + 0.3 * abs(math.log10(lr) + 3)
        study.add_trial(create_trial(params=params, distributions=distributions, value=value,
                                     user_attrs={"run_id": f"trial-{number}"}))
    extra = {"tokenizer.kind": "bpe", "optim.lr": 1e-3, "model.n_layer": 4}
    study.add_trial(create_trial(state=TrialState.PRUNED, params=extra, distributions=distributions,
                                 intermediate_values={50: 3.0}))
    study.add_trial(create_trial(state=TrialState.FAIL, params=extra, distributions=distributions))
    return study


class _TableReader(HTMLParser):
    """Collects the cells of <table id=...>: {row key: {data-col: text}}."""

    def __init__(self, table_id: str, row_attr: str) -> None:
        super().__init__(convert_charrefs=True)
        self.table_id, self.row_attr = table_id, row_attr
        self.inside, self.row, self.col = False, None, None
        self.rows: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self.inside = attributes.get("id") == self.table_id
        elif self.inside and tag == "tr" and self.row_attr in attributes:
            self.row = attributes[self.row_attr]
            self.rows[self.row] = {}
        elif self.inside and tag == "td" and self.row is not None:
            self.col = attributes.get("data-col")
            self.rows[self.row][self.col] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td":
            self.col = None

    def handle_data(self, data: str) -> None:
        if self.inside and self.row is not None and self.col is not None:
            self.rows[self.row][self.col] += data


def table_cells(html_text: str, table_id: str = "summary",
                row_attr: str = "data-run-id") -> dict[str, dict[str, str]]:
    """The text of every cell of an HTML table, by row key and column (data-col)."""
    reader = _TableReader(table_id, row_attr)
    reader.feed(html_text)
    return reader.rows
