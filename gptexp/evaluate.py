"""Use a trained run: evaluate its checkpoint on any text file, or sample from it.

Both load the run's own spec, tokenizer.json and checkpoint (best.pt when present, else last.pt;
`weights_only=True`), so a run directory is all they need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gptexp.checkpoint import CheckpointError, load_checkpoint
from gptexp.data import TokenSplit
from gptexp.components import build_objective
from gptexp.models import build_model, generate
from gptexp.objectives import Window, metric_sums, metrics_from_sums, token_info
from gptexp.spec import ExperimentSpec, SpecError, validate_spec
from gptexp.tokenizers import Tokenizer, TokenizerFileError, load_tokenizer
from gptexp.tracking import RunStore, RunStoreError

EVAL_SEED = 0  # masks of an MLM eval are drawn from this seed, so repeated evals agree


@dataclass
class LoadedRun:
    spec: ExperimentSpec
    tokenizer: Tokenizer
    model: nn.Module
    step: int
    checkpoint: Path


def load_trained_run(run_dir: Path, checkpoint: str = "best") -> LoadedRun:
    """The run's spec, tokenizer and model with its trained weights, in eval mode.

    Every way a run directory can be unusable (a malformed spec, a missing or foreign tokenizer,
    a truncated or foreign checkpoint, weights that do not fit the tokenizer) raises SpecError
    with one line naming the file.
    """
    import os

    from gptexp.components import START_DIR_ENV, recorded_start_dir

    store = RunStore(run_dir)
    started_in = recorded_start_dir(store.dir)
    if started_in and not os.environ.get(START_DIR_ENV):
        os.environ[START_DIR_ENV] = started_in  # custom components import from where the run started
    try:
        spec = validate_spec(store.read_spec(), str(store.spec_path))
    except RunStoreError as error:
        raise SpecError(str(error)) from None
    if store.tokenizer_path.exists() and not store.tokenizer_path.is_file():
        raise SpecError(f"{store.tokenizer_path}: not a regular file")  # a FIFO would block the read
    try:
        tokenizer = load_tokenizer(store.tokenizer_path)
    except TokenizerFileError as error:
        raise SpecError(str(error)) from None
    except OSError as error:
        raise SpecError(f"{store.tokenizer_path}: cannot read the run's tokenizer ({error.strerror})") from None
    candidates = [store.best_checkpoint, store.last_checkpoint] if checkpoint == "best" else [store.last_checkpoint]
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        raise SpecError(f"run {store.run_id}: no checkpoint yet in {store.checkpoint_dir}")
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        raise SpecError(str(error)) from None
    model = build_model(spec.model, tokenizer.vocab_size, causal=build_objective(spec.objective).causal)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        # Typically tokenizer.json was swapped: its vocabulary no longer matches the embedding.
        first = str(error).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if "size mismatch" in line), first[0] if first else "")
        raise SpecError(f"{path}: the weights do not fit this run's spec and {store.tokenizer_path.name} "
                        f"(vocabulary {tokenizer.vocab_size}); was a file of the run replaced? ({detail[:200]})") from None
    model.eval()
    return LoadedRun(spec, tokenizer, model, int(state["step"]), path)


def sequential_windows(split: TokenSplit, window: int, batch_size: int, max_batches: int | None) -> list[Window]:
    """Consecutive, non-overlapping windows covering the text from its start (deterministic)."""
    n_windows = (len(split) - 1) // (window - 1)
    if n_windows < 1:
        raise SpecError(f"the text has {len(split)} tokens; evaluation needs at least model.block_size + 1 = {window}")
    starts = torch.arange(n_windows) * (window - 1)
    batches = []
    for first in range(0, n_windows, batch_size):
        if max_batches is not None and len(batches) == max_batches:
            break
        batches.append(split.gather(starts[first : first + batch_size, None] + torch.arange(window)[None, :]))
    return batches


@torch.no_grad()
def evaluate_text(run: LoadedRun, text: str, batch_size: int, max_batches: int | None) -> dict[str, Any]:
    """val/loss, val/bpb, val/acc of the run's objective on `text` (unknown characters are <unk>)."""
    try:
        encoded = run.tokenizer.encode_for_training(text)
    except ValueError as error:  # e.g. a character outside a vocabulary that has no <unk>
        raise SpecError(f"--data: the run's tokenizer cannot encode this text ({error})") from None
    # bytes per token from the tokenizer's table, as in training, so both report the same val/bpb
    split = TokenSplit.from_encoded(run.tokenizer, encoded)
    info = token_info(run.tokenizer)
    generator = torch.Generator().manual_seed(EVAL_SEED)
    totals = torch.zeros(4, dtype=torch.float64)
    windows = sequential_windows(split, run.spec.model.block_size + 1, batch_size, max_batches)
    objective = build_objective(run.spec.objective)
    for window in windows:
        batch = objective.make_batch(window, info, generator)
        logits, _ = run.model(batch.inputs)
        totals += metric_sums(logits.float(), batch.labels, batch.label_bytes)
    metrics = metrics_from_sums(totals)
    unknown = run.tokenizer.special_tokens.get("<unk>")
    return {**metrics, "tokens": int(totals[2]), "bytes": int(totals[3]), "batches": len(windows),
            "unknown_tokens": int((encoded.ids == unknown).sum()) if unknown is not None else 0,
            "step": run.step, "checkpoint": run.checkpoint.name}


@torch.no_grad()
def generate_text(run: LoadedRun, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None,
                  seed: int, use_cache: bool = True) -> str:
    """Sample a continuation of `prompt` from a causal model (greedy when temperature is 0)."""
    if not build_objective(run.spec.objective).causal:
        raise SpecError(f"generate needs a causal model; this run was trained with objective {run.spec.objective.kind}")
    try:
        ids = run.tokenizer.encode(prompt) if prompt else []
    except ValueError as error:
        raise SpecError(f"--prompt: the run's tokenizer cannot encode it ({error})") from None
    if not ids:
        specials = run.tokenizer.special_tokens
        start = specials.get("<bos>", specials.get("<eos>"))
        if start is None:
            raise SpecError("--prompt: give some text (this tokenizer has no <bos> token to start from)")
        ids = [start]
    idx = torch.tensor([ids], dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    out = generate(run.model, idx, max_new_tokens, run.spec.model.block_size, temperature=temperature, top_k=top_k,
                   generator=generator, use_cache=use_cache)
    return run.tokenizer.decode(out[0].tolist())
