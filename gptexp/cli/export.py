"""`gptexp export RUN --format hf|safetensors --out DIR`: a trained run for the rest of the ecosystem."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gptexp.cli.errors import fail
from gptexp.cli.options import DEFAULT_RUNS_DIR, RunsDir, resolve_run


def export(
    run: Annotated[str, typer.Argument(metavar="RUN", help="run id or directory")],
    out: Annotated[Path, typer.Option("--out", help="directory to write (must be new or empty)", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="hf: a transformers checkpoint dir; safetensors: the run's checkpoints as .safetensors")] = "hf",
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="hf: best (lowest val/bpb, falls back to last) or last")] = "best",
    runs_dir: RunsDir = DEFAULT_RUNS_DIR,
) -> None:
    """Export a run. --format hf writes config.json, model.safetensors and the tokenizer files
    (pad/unk/bos/eos/mask tokens mapped) that transformers' AutoModelForCausalLM and AutoTokenizer
    load offline with no custom code: learned+gelu+layernorm -> GPT-2, rope+gelu+layernorm ->
    GPT-NeoX, rope+swiglu+rmsnorm -> Llama; any other model (bidirectional, bigram, custom, other
    mixes) exits 2 naming the reason. --format safetensors writes best/last.safetensors with the
    step and spec as metadata, plus spec.yaml and tokenizer.json."""
    from gptexp.export import EXPORT_FORMATS, export_hf, export_safetensors

    if format not in EXPORT_FORMATS:
        fail(f"--format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if checkpoint not in ("best", "last"):
        fail(f"--checkpoint {checkpoint!r}: expected best or last")
    run_dir = resolve_run(runs_dir, run)
    if format == "hf":
        result = export_hf(run_dir, out, checkpoint)
        print(f"exported {run_dir.name} (step {result['step']}, {result['checkpoint']}) as {result['model_class']} -> {out}")
    else:
        result = export_safetensors(run_dir, out)
        print(f"exported {run_dir.name}: {', '.join(result['files'])} -> {out}")
