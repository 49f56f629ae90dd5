"""Corpora as users have them: one text file, a directory or glob of files, JSON Lines or Parquet.

A corpus is a sequence of documents (a text file is one document, a JSONL line or a Parquet row
is one) joined into one UTF-8 byte stream with `data.separator` between documents. Everything
downstream (the sha256 that keys the caches, the split points, the tokenizer) sees only that
stream, read in blocks so that memory never holds the whole corpus.

    source = corpus_source(spec.data)              # resolves and checks the files
    info = scan(source)                            # sha256, bytes, documents (UTF-8 checked)
    for block in read_blocks(source): ...          # the joined stream, block by block

Only regular files are read: a FIFO or a device (/dev/zero) is refused before it is opened.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from gptexp.regular_file import FileRefused, refusal_message
from gptexp.regular_file import check_regular as check_regular_file

if TYPE_CHECKING:
    from gptexp.spec import DataSpec

BLOCK_BYTES = 1 << 20
FORMATS = ("text", "jsonl", "parquet")


class CorpusError(ValueError):
    """A corpus that cannot be used; the message (one line) names the file and the field."""


@dataclass(frozen=True)
class CorpusSource:
    """The files of one corpus and how to read documents out of them."""

    label: str  # the spec field it came from, for messages: "data.path" or "data.val_path"
    pattern: str  # what the user wrote
    files: tuple[Path, ...]
    format: str = "text"
    field: str = "text"
    separator: str = "\n\n"

    def identity(self) -> tuple:
        """What a scan depends on: the files (with size and mtime) and how they are read."""
        stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in self.files)
        return (stats, self.format, self.field, self.separator)


@dataclass(frozen=True)
class CorpusInfo:
    sha256: str  # of the joined UTF-8 stream; for one text file, the file's own sha256
    n_bytes: int
    n_documents: int


# ---------------------------------------------------------------------------------------------
# resolving and checking files


def check_regular(path: Path, label: str) -> None:
    """Refuse anything but a regular file this process can open (after symlinks), before reading it."""
    try:
        check_regular_file(path)
    except FileRefused as refused:
        raise CorpusError(f"{label}: " + refusal_message(
            refused, directory="{path}: is a directory, expected a file",
            special="{path}: not a regular file (FIFOs, devices and sockets cannot be read as a corpus)")) from None


def resolve_files(pattern: str, label: str) -> tuple[Path, ...]:
    """The files a data path names, in a fixed order.

    a file -> itself; a directory -> every non-hidden file below it, sorted by path;
    a glob ("corpus/*.txt", "shards/**/*.jsonl") -> its matches, sorted.
    """
    path = Path(pattern)
    if glob.has_magic(pattern):
        matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
        files = [m for m in matches if not m.is_dir()]
        if not files:
            raise CorpusError(f"{label}: {pattern}: no files match")
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*")
                       if not f.is_dir() and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            raise CorpusError(f"{label}: {path}: is a directory with no files")
    else:
        files = [path]
    for f in files:
        check_regular(f, label)
    return tuple(files)


def corpus_sources(data: DataSpec) -> tuple[CorpusSource, CorpusSource | None]:
    """The training corpus and, when data.val_path is set, the validation corpus."""
    if data.format == "parquet":
        require_pyarrow()
    common = {"format": data.format, "field": data.field, "separator": data.separator}
    train = CorpusSource("data.path", data.path, resolve_files(data.path, "data.path"), **common)
    val = None
    if data.val_path is not None:
        val = CorpusSource("data.val_path", data.val_path, resolve_files(data.val_path, "data.val_path"), **common)
    return train, val


def require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise CorpusError("data.format: parquet needs pyarrow, which is not installed "
                          "(pip install 'gptexp[parquet]')") from None


# ---------------------------------------------------------------------------------------------
# reading documents


def _text_document(path: Path, label: str) -> Iterator[bytes]:
    """A text file's bytes in blocks, checked to be UTF-8 as they stream by."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                raise CorpusError(f"{label}: {path}: not UTF-8 text (byte {offset + error.start})") from None
            offset += len(block)
            yield block
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CorpusError(f"{label}: {path}: not UTF-8 text (truncated character at the end)") from None


def _record_text(value: object, where: str, field: str) -> bytes:
    if not isinstance(value, str):
        raise CorpusError(f"{where}: field {field!r} is {type(value).__name__}, expected a string")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise CorpusError(f"{where}: field {field!r} holds a lone surrogate (no UTF-8 form)") from None


def _jsonl_documents(path: Path, label: str, field: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{label}: {path}:{number}"
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise CorpusError(f"{where}: not a JSON object") from None
            if not isinstance(record, dict) or field not in record:
                raise CorpusError(f"{where}: no field {field!r} (set data.field)")
            yield _record_text(record[field], where, field)


def _parquet_documents(path: Path, label: str, field: str) -> Iterator[bytes]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        if field not in parquet.schema_arrow.names:
            raise CorpusError(f"{label}: {path}: no column {field!r} (set data.field)")
        for batch in parquet.iter_batches(columns=[field], batch_size=4096):
            for n, value in enumerate(batch.column(0).to_pylist()):
                if value is not None:
                    yield _record_text(value, f"{label}: {path}: row {n}", field)
    except (pyarrow.ArrowException, OSError) as error:
        raise CorpusError(f"{label}: {path}: not a readable Parquet file ({error})") from None


def documents(source: CorpusSource) -> Iterator[Iterator[bytes]]:
    """Each document as an iterator of byte blocks."""
    for path in source.files:
        if source.format == "text":
            yield _text_document(path, source.label)
        elif source.format == "jsonl":
            yield from (iter((doc,)) for doc in _jsonl_documents(path, source.label, source.field))
        else:
            yield from (iter((doc,)) for doc in _parquet_documents(path, source.label, source.field))


def read_blocks(source: CorpusSource) -> Iterator[bytes]:
    """The joined corpus: documents with the separator between them, as byte blocks."""
    separator = source.separator.encode("utf-8")
    for n, document in enumerate(documents(source)):
        if n and separator:
            yield separator
        yield from document


_SCANS: dict[tuple, CorpusInfo] = {}


def scan(source: CorpusSource) -> CorpusInfo:
    """sha256, size and document count of the joined corpus (remembered for unchanged files)."""
    key = source.identity()
    if key in _SCANS:
        return _SCANS[key]
    digest = hashlib.sha256()
    n_bytes = n_documents = 0
    non_blank = False
    separator = source.separator.encode("utf-8")
    for document in documents(source):
        if n_documents and separator:
            digest.update(separator)
            n_bytes += len(separator)
        n_documents += 1
        for block in document:
            digest.update(block)
            n_bytes += len(block)
            non_blank = non_blank or (bool(block) and not block.isspace())
    if not non_blank:
        what = f"{source.files[0]}: file is empty" if len(source.files) == 1 else f"{source.pattern}: the corpus is empty"
        raise CorpusError(f"{source.label}: {what}")
    info = CorpusInfo(digest.hexdigest(), n_bytes, n_documents)
    _SCANS[key] = info
    return info


def check_corpus(data: DataSpec) -> tuple[CorpusInfo, CorpusInfo | None]:
    """Resolve and scan the corpora of a data spec; CorpusError if any is unusable."""
    train, val = corpus_sources(data)
    return scan(train), (scan(val) if val is not None else None)
