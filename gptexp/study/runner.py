"""Run a study: prepare, tune, train, score, report. Every phase is resumable.

Resuming needs no journal: every run has a deterministic id (`<study>-<arm>-t<i>` for tuning,
`<study>-<arm>-s<seed>` for the final runs) in the ordinary runs directory, every phase writes
its outcome atomically into the study directory, and a rerun skips what is complete, resumes a
stopped run from its last checkpoint, and redoes what never finished.

Study directory `<runs dir>/studies/<name>/`:
    study.json        the validated study file, as run
    dev_corpus.txt    the training text; tuning trains on its start and selects on its end
    evalsets/         frozen evaluation sets: val.json, test.json, heldout_<name>.json
    arms.json         per arm: tokenizer, bytes per token, bytes of context, parameters, FLOPs
    tune.json         per arm: every grid point's dev val/bpb and the chosen one
    scores/<run>.json per final run: per-word bits of every evaluation set, and the metrics
    results.json, report.md, report.html, plots/   (report.py)
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gptexp import contract as C
from gptexp.data import prepare_data
from gptexp.evalset import EvalSet, arm_view, build_evalset
from gptexp.launch import EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, resume_run, start_run
from gptexp.spec import DataSpec, ExperimentSpec, SpecError, resolve_paths
from gptexp.study.spec import StudySpec
from gptexp.tracking import RunStore, write_json_atomic, read_json

STUDIES_DIR = "studies"


class StudyFailed(RuntimeError):
    """A run of the study failed; the message names it and its log."""


class StudyInterrupted(RuntimeError):
    def __init__(self, exit_code: int) -> None:
        super().__init__("interrupted")
        self.exit_code = exit_code


def study_dir(runs_dir: Path, name: str) -> Path:
    return runs_dir / STUDIES_DIR / name


def tune_run_id(study: StudySpec, arm: str, index: int) -> str:
    return f"{study.name}-{arm}-t{index}"


def final_run_id(study: StudySpec, arm: str, seed: int) -> str:
    return f"{study.name}-{arm}-s{seed}"


def arm_seeds(study: StudySpec, arm: str) -> list[int]:
    return study.seeds[: study.arms[arm].seeds]


def corpus_splits(spec: ExperimentSpec) -> dict[str, str]:
    """The text of each split, cut exactly as the trainer's data is (gptexp.data's layout)."""
    from gptexp.data.prepare import Layout

    texts = {split: "".join(blocks) for split, blocks in Layout(spec).split_texts()}
    return {split: texts.get(split, "") for split in ("train", "test", "val")}


@dataclass
class StudyRunner:
    study: StudySpec
    runs_dir: Path
    say: Callable[[str], None] = field(default=lambda message: print(message, flush=True))

    def __post_init__(self) -> None:
        self.runs_dir = self.runs_dir.resolve()
        self.dir = study_dir(self.runs_dir, self.study.name)
        self._views: dict[tuple[str, str], Any] = {}

    # -- the whole study ----------------------------------------------------------------------
    def run(self) -> Path:
        started = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._record_spec()
        arms = self.prepare()
        evalsets = self.evalsets(arms)
        best = self.tune()
        for arm in self.study.arms:
            for seed in arm_seeds(self.study, arm):
                self.train_final(arm, seed, best[arm]["params"])
        for arm in self.study.arms:
            for seed in arm_seeds(self.study, arm):
                self.score(arm, seed, evalsets)
        from gptexp.study.report import write_report

        paths = write_report(self.study, self.runs_dir)
        self.say(f"study {self.study.name}: done in {time.time() - started:.0f} s; report {paths['report.md']}")
        return paths["results.json"]

    def _record_spec(self) -> None:
        path = self.dir / "study.json"
        current = self.study.model_dump(mode="json")
        previous = read_json(path)
        if previous is not None and previous != current:
            raise SpecError(f"study {self.study.name}: {path} holds a different study file; "
                            f"use another name or another --runs-dir")
        write_json_atomic(path, current)

    # -- 1. tokenizers, budgets, evaluation sets --------------------------------------------
    def prepare(self) -> dict[str, dict[str, Any]]:
        """Train (or reuse) each arm's tokenizer; check the bytes of context; count params and FLOPs."""
        path = self.dir / "arms.json"
        cached = read_json(path)
        if cached is not None and set(cached) == set(self.study.arms):
            return cached
        from gptexp.models import build_model
        from gptexp.tokenizers import load_tokenizer

        arms: dict[str, dict[str, Any]] = {}
        for arm in self.study.arms:
            spec = resolve_paths(self.study.arm_spec(arm))
            self.say(f"study {self.study.name}: preparing the data of arm {arm}")
            prepared = prepare_data(spec, self.runs_dir / ".cache", progress=self.say)
            tokenizer = load_tokenizer(prepared.tokenizer_path)
            val_text = corpus_splits(spec)["val"]
            encoded = tokenizer.encode_for_training(val_text)
            bytes_per_token = encoded.num_bytes / max(1, len(encoded))
            model = build_model(spec.model, tokenizer.vocab_size, causal=False)
            total = model.num_parameters()
            d, layers, block = spec.model.n_embd, spec.model.n_layer, spec.model.block_size
            embedding = tokenizer.vocab_size * d + (block * d if spec.model.positions == "learned" else 0)
            non_embedding = total - embedding
            # Kaplan et al. 2020: 6 N per trained token (forward + backward), N counting the output
            # projection once even when it shares the embedding, plus attention over the window.
            flops_per_token = 6 * (non_embedding + tokenizer.vocab_size * d) + 12 * layers * d * block
            tokens_per_step = spec.train.batch_size * spec.train.grad_accum * spec.launch.nproc * block
            arms[arm] = {
                "tokenizer": spec.tokenizer.kind, "objective": spec.objective.kind, "mask_unit": spec.objective.mask_unit,
                "tokenizer_path": str(prepared.tokenizer_path), "vocab_size": tokenizer.vocab_size,
                "block_size": block, "bytes_per_token": bytes_per_token, "context_bytes": block * bytes_per_token,
                "params": total, "non_embedding_params": non_embedding, "flops_per_token": flops_per_token,
                "steps": spec.train.max_steps, "tokens_per_step": tokens_per_step,
                "train_flops": flops_per_token * tokens_per_step * spec.train.max_steps,
            }
            del model
        contexts = {arm: info["context_bytes"] for arm, info in arms.items()}
        low, high = min(contexts.values()), max(contexts.values())
        if (high - low) / low > self.study.budget.context_bytes_tolerance:
            listing = ", ".join(f"{arm} {value:.0f}" for arm, value in contexts.items())
            raise SpecError(f"budget: bytes of context per window differ by more than "
                            f"{self.study.budget.context_bytes_tolerance:.0%} ({listing}); adjust model.block_size")
        write_json_atomic(path, arms)
        return arms

    def evalsets(self, arms: dict[str, dict[str, Any]]) -> dict[str, tuple[EvalSet, str]]:
        """The frozen evaluation sets (built once, then read back): val, test, held-out texts."""
        from gptexp.tokenizers import load_tokenizer

        spec = resolve_paths(self.study.arm_spec(next(iter(self.study.arms))))
        splits = corpus_splits(spec)
        texts = {"val": splits["val"]}
        if spec.data.test_fraction > 0:
            texts["test"] = splits["test"]
        for held in self.study.evaluation.held_out:
            texts[f"heldout_{held.name}"] = Path(held.path).read_bytes().decode("utf-8")
        tokenizers: list[tuple[Any, int]] = []  # loaded only if a set must be built
        out = {}
        for name, text in texts.items():
            path = self.dir / "evalsets" / f"{name}.json"
            if path.exists():
                evalset = EvalSet.load(path, text)
            else:
                if not tokenizers:
                    tokenizers = [(load_tokenizer(info["tokenizer_path"]), info["block_size"]) for info in arms.values()]
                reference = next((tok for tok, _ in tokenizers if tok.kind == "bpe"), None)
                evalset = build_evalset(text, spec.tokenizer.pattern, tokenizers, self.study.seed,
                                        self.study.evaluation.hidden_fraction, reference)
                if self.study.evaluation.max_spans:
                    evalset.spans = evalset.spans[: self.study.evaluation.max_spans]
                evalset.save(path)
                self.say(f"study {self.study.name}: evaluation set {name}: {len(evalset.spans)} spans, "
                         f"{evalset.hidden_words} hidden words ({evalset.hidden_bytes} bytes), "
                         f"{evalset.skipped_words} skipped (characters outside a vocabulary)")
            out[name] = (evalset, text)
        return out

    # -- 2. tuning on a dev slice of the training text ---------------------------------------
    def dev_corpus(self) -> Path:
        path = self.dir / "dev_corpus.txt"
        if not path.exists():
            spec = resolve_paths(self.study.arm_spec(next(iter(self.study.arms))))
            tmp = path.with_name(".dev_corpus.txt.tmp")
            tmp.write_text(corpus_splits(spec)["train"], encoding="utf-8")
            tmp.replace(path)
        return path

    def tune_spec(self, arm: str, point: dict[str, Any]) -> ExperimentSpec:
        spec = self.study.arm_spec(arm, point)
        fraction = self.study.tune.steps_fraction
        steps = max(1, round(spec.train.max_steps * fraction))
        spec.data = DataSpec.model_validate({**spec.data.model_dump(), "path": str(self.dev_corpus()), "format": "text",
                                             "val_path": None, "val_fraction": self.study.tune.dev_fraction,
                                             "test_fraction": 0.0})
        spec.train.max_steps = steps
        spec.train.eval_every = min(spec.train.eval_every, steps)
        spec.train.checkpoint_every = min(spec.train.checkpoint_every, steps)
        spec.optim.warmup_steps = round(spec.optim.warmup_steps * fraction)
        spec.seed = self.study.seeds[0]
        spec.name = f"{self.study.name}-{arm}-tune"
        spec.tracking.wandb.group = f"{self.study.name}-tune"
        return spec

    def tune(self) -> dict[str, dict[str, Any]]:
        path = self.dir / "tune.json"
        done = read_json(path) or {}
        points = self.study.grid_points()
        for arm in self.study.arms:
            if arm in done:
                continue
            if len(points) == 1:
                done[arm] = {"params": points[0], "trials": []}
            else:
                trials = []
                for index, point in enumerate(points):
                    run_id = tune_run_id(self.study, arm, index)
                    summary = self.execute(self.tune_spec(arm, point), run_id, f"tune {arm} {point}")
                    trials.append({"run_id": run_id, "params": point, "dev/bpb": summary.get(C.VAL_BPB)})
                scored = [t for t in trials if isinstance(t["dev/bpb"], (int, float)) and math.isfinite(t["dev/bpb"])]
                if not scored:
                    raise StudyFailed(f"arm {arm}: no tuning run reached a finite dev val/bpb")
                chosen = min(scored, key=lambda t: t["dev/bpb"])
                done[arm] = {"params": chosen["params"], "trials": trials}
                self.say(f"study {self.study.name}: arm {arm} tuned: {chosen['params']} (dev val/bpb {chosen['dev/bpb']:.4f})")
            write_json_atomic(path, done)
        return done

    # -- 3. final runs ----------------------------------------------------------------------
    def final_spec(self, arm: str, seed: int, params: dict[str, Any]) -> ExperimentSpec:
        spec = resolve_paths(self.study.arm_spec(arm, params))
        spec.seed = seed
        spec.name = f"{self.study.name}-{arm}"
        spec.tracking.wandb.group = self.study.name
        return spec

    def train_final(self, arm: str, seed: int, params: dict[str, Any]) -> dict[str, Any]:
        return self.execute(self.final_spec(arm, seed, params), final_run_id(self.study, arm, seed), f"train {arm} seed {seed}")

    def execute(self, spec: ExperimentSpec, run_id: str, what: str) -> dict[str, Any]:
        """Run `spec` as run `run_id` to completion: skip it if done, resume it if stopped."""
        run_dir = self.runs_dir / run_id
        store = RunStore(run_dir)
        if run_dir.exists() and not store.spec_path.exists():
            shutil.rmtree(run_dir)  # killed between creating the directory and writing its spec
        started = time.time()
        if store.spec_path.exists():
            state = wait_for_orphaned_workers(store)
            if state == "completed":
                return store.read_summary()
            if state == "running":
                raise StudyFailed(f"run {run_id} is running in another process; wait for it or stop it")
            # interrupted, crashed, or failed (a stop while its workers started reads as failed):
            # continue from its last checkpoint, or from the start if it has none. A run that fails
            # for a reason of its own fails again, and the study stops with its error.
            self.say(f"study {self.study.name}: {what}: resuming run {run_id} ({state})")
            result = resume_run(self.runs_dir, run_id, progress=self.say)
        else:
            self.say(f"study {self.study.name}: {what}: run {run_id}")
            spec.launch.run_id = run_id
            result = start_run(spec, self.runs_dir, log_path_name="train.log", progress=self.say)
        if result.exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
            raise StudyInterrupted(result.exit_code)
        if result.exit_code != EXIT_OK:
            raise StudyFailed(f"run {run_id} ended {result.status} (exit {result.exit_code}); see {run_dir}/train.log")
        summary = store.read_summary()
        self.say(f"study {self.study.name}: {what}: done in {time.time() - started:.0f} s, val/bpb {summary.get(C.VAL_BPB)}")
        return summary

    # -- 4. scoring on the frozen sets --------------------------------------------------------
    def score(self, arm: str, seed: int, evalsets: dict[str, tuple[EvalSet, str]]) -> dict[str, Any]:
        run_id = final_run_id(self.study, arm, seed)
        path = self.dir / "scores" / f"{run_id}.json"
        cached = read_json(path)
        if cached is not None:
            return cached
        started = time.time()
        record = score_run(self.runs_dir / run_id, evalsets, self._views)
        write_json_atomic(path, record)
        from gptexp.scoring import METRIC_PREFIX  # torch: loaded by score_run already

        self.say(f"study {self.study.name}: scored {run_id} in {time.time() - started:.0f} s: " + ", ".join(
            f"{name} {record['metrics'].get(name, math.nan):.4f}" for name in (C.VAL_BPB, METRIC_PREFIX["pll_l2r"])))
        return record


def wait_for_orphaned_workers(store: RunStore, timeout_s: float = 120.0) -> str:
    """The run's status, after waiting for workers whose launcher was killed to record theirs.

    A study killed hard (SIGKILL) leaves its run's workers alive; they notice the launcher is gone
    after the current step, write a checkpoint and mark the run interrupted. Until then the run
    still reads as running.
    """
    from gptexp.tracking import pid_alive

    deadline = time.monotonic() + timeout_s
    while True:
        status = store.read_status()
        state = store.effective_status()
        orphaned = state == "running" and not pid_alive(status.get("launcher_pid"))
        if not orphaned or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


# The test split and held-out texts are scored once, at the end, on the two metrics the answer
# rests on (the headline and today's metric); hw_l2r and pll are for the validation set only.
HELD_OUT_SCORINGS = ("masked", "pll_l2r")


def score_run(run_dir: Path, evalsets: dict[str, tuple[EvalSet, str]], views: dict | None = None) -> dict[str, Any]:
    """Score a run's last checkpoint on each evaluation set: metrics and per-word bits."""
    from gptexp.evaluate import load_trained_run
    from gptexp.scoring import SCORINGS, score_spans, summarize

    run = load_trained_run(run_dir, checkpoint="last")
    mask_id = run.tokenizer.special_tokens.get("<mask>")
    if mask_id is None:
        raise SpecError(f"run {run_dir.name}: its tokenizer has no <mask>; PLL scoring needs a masked LM")
    views = {} if views is None else views
    metrics: dict[str, float] = {}
    words: dict[str, Any] = {}
    for name, (evalset, text) in evalsets.items():
        key = (run.tokenizer.fingerprint(), name)
        if key not in views:
            views[key] = arm_view(evalset, text, run.tokenizer)
        scores = score_spans(run.model, views[key], mask_id, SCORINGS if name == "val" else HELD_OUT_SCORINGS)
        reference = [n for span in evalset.spans for n in span.reference_tokens] or None
        prefix = "val/" if name == "val" else ("test/" if name == "test" else f"{name.replace('heldout_', 'heldout/')}/")
        metrics.update(summarize(scores, reference, prefix))
        words[name] = {"bits": scores.bits, "exact": scores.exact, "word_bytes": scores.word_bytes,
                       "word_tokens": scores.word_tokens}
        del scores
    return {"run_id": run_dir.name, "step": run.step, "checkpoint": run.checkpoint.name, "metrics": metrics, "words": words}


def study_status(runs_dir: Path, name: str) -> list[tuple[str, str]]:
    """(what, state) for every piece of a study, in the order the runner does them."""
    directory = study_dir(runs_dir, name)
    raw = read_json(directory / "study.json")
    if raw is None:
        raise SpecError(f"study {name!r}: not found in {runs_dir / STUDIES_DIR}")
    study = StudySpec.model_validate(raw)
    rows: list[tuple[str, str]] = []
    rows.append(("data and tokenizers", "done" if (directory / "arms.json").exists() else "to do"))
    rows.append(("evaluation sets", "done" if (directory / "evalsets" / "val.json").exists() else "to do"))
    tuned = read_json(directory / "tune.json") or {}
    points = study.grid_points()

    def run_state(run_id: str) -> str:
        store = RunStore(runs_dir / run_id)
        if not store.spec_path.exists():
            return "to do"
        state = store.effective_status()
        step = store.read_status().get("step", 0)
        return state if state == "completed" else f"{state} at step {step}"

    for arm in study.arms:
        if arm in tuned:
            rows.append((f"tune {arm}", f"done: {tuned[arm]['params']}"))
        elif len(points) > 1:
            for index, point in enumerate(points):
                rows.append((f"tune {arm} {point}", run_state(tune_run_id(study, arm, index))))
    for arm in study.arms:
        for seed in arm_seeds(study, arm):
            run_id = final_run_id(study, arm, seed)
            scored = (directory / "scores" / f"{run_id}.json").exists()
            rows.append((f"train {arm} seed {seed} ({run_id})", "scored" if scored else run_state(run_id)))
    rows.append(("report", "done" if (directory / "results.json").exists() else "to do"))
    return rows
