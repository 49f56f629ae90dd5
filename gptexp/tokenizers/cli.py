"""`gptexp tokenizer ...`: train a tokenizer on a corpus, export one to Hugging Face.

Bad input (a missing, unreadable or non-UTF-8 corpus, a directory, a bad vocab
size or pattern, a broken tokenizer file) prints one short red line naming the
file and exits with code 2; it never shows a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from .base import DEFAULT_SPECIAL_TOKENS, PATTERN_NAMES, TokenizerFileError, load_tokenizer

app = typer.Typer(
    help="Train a char or byte-level BPE tokenizer, or export one as a Hugging Face tokenizer.json.",
    no_args_is_help=True,
    add_completion=False,
)

BAD_INPUT = 2


def _fail(message: str) -> NoReturn:
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(BAD_INPUT)


def read_corpus(path: Path) -> str:
    """The corpus as text, or a one-line failure naming the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        _fail(f"corpus {path}: no such file")
    except IsADirectoryError:
        _fail(f"corpus {path}: is a directory, not a text file")
    except OSError as err:
        _fail(f"corpus {path}: cannot read ({err.strerror or err})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        _fail(f"corpus {path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})")
    if not text:
        _fail(f"corpus {path}: is empty")
    return text


def _write(what: Callable[[Path], None], out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        what(out)
    except OSError as err:
        _fail(f"cannot write {out}: {err.strerror or err}")


@app.command()
def train(
    corpus: Path = typer.Argument(..., help="UTF-8 text file to train on.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the tokenizer JSON.", show_default=False),
    kind: str = typer.Option("bpe", "--kind", help="bpe (byte-level BPE) or char."),
    vocab_size: int = typer.Option(2048, "--vocab-size", help="bpe: 256 bytes + merges + special tokens (ignored for char)."),
    pattern: str = typer.Option("gpt4", "--pattern", help="pre-split regex: gpt2, gpt4 or none."),
) -> None:
    """Train a tokenizer on CORPUS and save it to --out."""
    from . import train_tokenizer  # here, not at import: keeps `--help` fast

    if kind not in ("bpe", "char"):
        _fail(f"--kind must be bpe or char, got {kind!r}")
    if pattern not in PATTERN_NAMES:
        _fail(f"--pattern must be one of {', '.join(PATTERN_NAMES)}, got {pattern!r}")
    if kind == "bpe" and vocab_size < 256 + len(DEFAULT_SPECIAL_TOKENS):
        _fail(
            f"--vocab-size {vocab_size} is too small for bpe: it counts 256 byte tokens and "
            f"{len(DEFAULT_SPECIAL_TOKENS)} special tokens, so it must be at least {256 + len(DEFAULT_SPECIAL_TOKENS)}"
        )
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
        _fail(f"corpus {corpus}: {err}")
    seconds = time.perf_counter() - start
    _write(tok.save, out)
    merges = len(tok.merges) if kind == "bpe" else 0
    print(
        f"trained {kind} tokenizer on {corpus}: vocab size {tok.vocab_size}, merges {merges}, "
        f"special tokens {len(tok.special_tokens)}, pattern {pattern}, {seconds:.2f} s -> {out}"
    )
    if kind == "bpe" and tok.vocab_size < vocab_size:
        print(f"note: the corpus ran out of pairs; the vocabulary is smaller than the {vocab_size} asked for")


@app.command("export-hf")
def export_hf_command(
    file: Path = typer.Argument(..., help="A tokenizer JSON written by `train`.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the Hugging Face tokenizer.json.", show_default=False),
) -> None:
    """Write a Hugging Face `tokenizers` JSON that encodes like FILE."""
    from .hf import export_hf

    try:
        tok = load_tokenizer(file)
    except TokenizerFileError as err:
        _fail(str(err))
    try:
        _write(lambda p: export_hf(tok, p), out)
    except (ValueError, NotImplementedError) as err:
        _fail(f"{file}: {err}")
    print(f"wrote Hugging Face tokenizer ({tok.kind}, vocab size {tok.vocab_size}) -> {out}")


if __name__ == "__main__":  # pragma: no cover
    app()
