"""`gptexp tokenizer train | export-hf`: train a tokenizer on a corpus, export one to Hugging Face.

Bad input (a missing, unreadable or non-UTF-8 corpus, a directory, a bad vocab size or pattern, a
broken tokenizer file) exits 2 with one line naming the file (errors.py); never a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console

from gptexp.cli.errors import fail


def read_corpus(path: Path) -> str:
    """The corpus as text, or a one-line failure naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        fail(f"corpus {path}: no such file")
    except IsADirectoryError:
        fail(f"corpus {path}: is a directory, not a text file")
    except OSError as err:
        fail(f"corpus {path}: cannot read ({err.strerror or err})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        fail(f"corpus {path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})")
    if not text:
        fail(f"corpus {path}: is empty")
    return text


def _write(what: Callable[[Path], None], out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        what(out)
    except OSError as err:
        fail(f"cannot write {out}: {err.strerror or err}")


def train(
    corpus: Path = typer.Argument(..., help="UTF-8 text file to train on.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the tokenizer JSON.", show_default=False),
    kind: str = typer.Option("bpe", "--kind", help="bpe (byte-level BPE) or char."),
    vocab_size: int = typer.Option(2048, "--vocab-size", help="bpe: 256 bytes + merges + special tokens (ignored for char)."),
    pattern: str = typer.Option("gpt4", "--pattern", help="pre-split regex: gpt2, gpt4 or none."),
) -> None:
    """Train a tokenizer on CORPUS and save it to --out."""
    from gptexp.tokenizers import train_tokenizer  # here, not at import: keeps `--help` fast
    from gptexp.tokenizers.base import DEFAULT_SPECIAL_TOKENS, PATTERN_NAMES

    if kind not in ("bpe", "char"):
        fail(f"--kind must be bpe or char, got {kind!r}")
    if pattern not in PATTERN_NAMES:
        fail(f"--pattern must be one of {', '.join(PATTERN_NAMES)}, got {pattern!r}")
    if kind == "bpe" and vocab_size < 256 + len(DEFAULT_SPECIAL_TOKENS):
        fail(
            f"--vocab-size {vocab_size} is too small for bpe: it counts 256 byte tokens and "
            f"{len(DEFAULT_SPECIAL_TOKENS)} special tokens, so it must be at least {256 + len(DEFAULT_SPECIAL_TOKENS)}"
        )
    from gptexp.limits import MAX_VOCAB_SIZE

    if vocab_size > MAX_VOCAB_SIZE:
        fail(f"--vocab-size {vocab_size}: at most {MAX_VOCAB_SIZE} (the spec's tokenizer.vocab_size bound)")
    text = read_corpus(corpus)
    console = Console(stderr=True)
    start = time.perf_counter()
    try:
        if kind == "bpe" and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            with Progress("merges", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task("train", total=None)
                tok = train_tokenizer(
                    text, kind=kind, vocab_size=vocab_size, pattern=pattern,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
        else:
            tok = train_tokenizer(text, kind=kind, vocab_size=vocab_size, pattern=pattern)
    except ValueError as err:
        fail(f"corpus {corpus}: {err}")
    seconds = time.perf_counter() - start
    _write(tok.save, out)
    merges = len(tok.merges) if kind == "bpe" else 0
    print(
        f"trained {kind} tokenizer on {corpus}: vocab size {tok.vocab_size}, merges {merges}, "
        f"special tokens {len(tok.special_tokens)}, pattern {pattern}, {seconds:.2f} s -> {out}"
    )
    if kind == "bpe" and tok.vocab_size < vocab_size:
        print(f"note: the corpus ran out of pairs; the vocabulary is smaller than the {vocab_size} asked for")


def export_hf(
    file: Path = typer.Argument(..., help="A tokenizer JSON written by `train`.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the Hugging Face tokenizer.json (tokenizer_config.json and special_tokens_map.json go beside it).", show_default=False),
) -> None:
    """Write a Hugging Face `tokenizers` JSON that encodes like FILE with allow_special (a literal
    "<mask>" in text becomes the mask token; gptexp's plain encode reads it as characters), plus
    tokenizer_config.json and special_tokens_map.json beside it so that transformers'
    AutoTokenizer.from_pretrained(DIR) knows pad/unk/bos/eos/mask (padding=True works)."""
    from gptexp.tokenizers.base import load_tokenizer
    from gptexp.tokenizers.hf import export_hf as write_hf

    tok = load_tokenizer(file)  # TokenizerFileError: exit 2
    written: list[Path] = []
    try:
        _write(lambda p: written.extend(write_hf(tok, p)), out)
    except (ValueError, NotImplementedError) as err:
        fail(f"{file}: {err}")
    print(f"wrote Hugging Face tokenizer ({tok.kind}, vocab size {tok.vocab_size}) -> {', '.join(str(p) for p in written)}")
