"""`gptexp eval` and `gptexp generate`: use a trained run's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, resolve_run
from gptexp.limits import MAX_NEW_TOKENS


def eval_command(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run id or directory")],
    data: Annotated[Optional[Path], typer.Option("--data", help="any UTF-8 text file to evaluate on (with --metric: default the run's validation text)")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="masked | pll | pll_l2r: score hidden words of a frozen evaluation set (bits per byte of the words)")] = None,
    batches: Annotated[Optional[int], typer.Option("--batches", min=1, help="evaluate at most N batches (default: the whole file)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="windows per batch")] = 32,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best (lowest val/bpb, falls back to last) or last")] = "best",
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Evaluate a run's checkpoint on a text file; prints JSON with val/loss, val/bpb, val/acc.

    The run's own objective is used (MLM masks are seeded, so repeated evals agree). Characters a
    char tokenizer never saw become <unk>, which is predicted like any token but stands for no
    bytes (as in training), so text with unseen characters scores pessimistically, never better.

    With --metric (masked LMs): words of the text are hidden once (15%, seed 0, 100% <mask>) and priced in bits per byte: masked = all hidden words of a span masked, each token predicted independently (val/bpb) and by the chain rule inside the word (val/hw_l2r_bpb); pll = only the target word masked; pll_l2r = PLL-word-l2r, the word's tokens left to right. Words with characters outside the vocabulary are skipped (counted).
    """
    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint {checkpoint!r}: expected best or last")
    run_dir = resolve_run(runs_dir, run)
    if metric is not None:
        from gptexp.scoring import METRIC_CHOICES

        if metric not in METRIC_CHOICES:
            fail(f"--metric {metric!r}: expected one of {', '.join(METRIC_CHOICES)}")
        from gptexp.study.evaluate import score_text

        print(json.dumps(score_text(run_dir, read_text_file(data, "--data") if data else None, METRIC_CHOICES[metric], checkpoint)))
        return
    if data is None:
        fail("--data FILE: give a text to evaluate on (or --metric to score the run's validation text)")
    text = read_text_file(data, "--data")
    from gptexp.evaluate import evaluate_text, load_trained_run

    metrics = evaluate_text(load_trained_run(run_dir, checkpoint), text, batch_size, batches)
    print(json.dumps(metrics))


def generate(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run id or directory (a causal model)")],
    prompt: Annotated[str, typer.Option("--prompt", help="text to continue")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help=f"tokens to sample, 1 to {MAX_NEW_TOKENS:,}")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option("--top-k", min=1, help="sample among the k most likely tokens")] = None,
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="recompute attention over the whole context for every token (slower; for checking)")] = False,
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Sample text from a causal model (clm runs) with a KV cache."""
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        fail(f"--max-new-tokens {max_new_tokens}: expected 1 to {MAX_NEW_TOKENS}")
    run_dir = resolve_run(runs_dir, run)
    from gptexp.evaluate import generate_text, load_trained_run

    try:
        text = generate_text(load_trained_run(run_dir), prompt, max_new_tokens, temperature, top_k, seed,
                             use_cache=not no_cache)
    except ValueError as error:  # e.g. an MLM run, or a prompt its tokenizer cannot encode
        fail(str(error))
    print(text)


def read_text_file(path: Path, flag: str) -> str:
    """The UTF-8 text of `path`, or exit 2 with one line naming the flag and the file.

    Only regular files: a FIFO or a device (/dev/zero) would block or read until memory runs out.
    """
    from gptexp.data.corpus import CorpusError, check_regular

    try:
        check_regular(path, flag)
    except CorpusError as error:
        fail(str(error))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        fail(f"{flag} {path}: not UTF-8 text (byte {error.start})")
    except OSError as error:
        fail(f"{flag} {path}: cannot read ({error.strerror})")
    if not text.strip():
        fail(f"{flag} {path}: file is empty")
    return text
