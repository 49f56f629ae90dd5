"""Opening files that a user or an earlier run named: regular files only, never blocking, bounded.

A spec, a run's metrics.jsonl or a corpus file may be a FIFO, a device or a directory by mistake
or by malice; reading /dev/zero never ends and a plain open() of a FIFO without a writer hangs.
Every module that reads such a file goes through here and turns a FileRefused into its own
one-line error (SpecError, RunStoreError, CorpusError, ...), so the checks live in one place.
"""

from __future__ import annotations

import os
import stat
from enum import Enum
from pathlib import Path
from typing import BinaryIO


class Refusal(Enum):
    MISSING = "file not found"
    DIRECTORY = "is a directory"
    SPECIAL = "not a regular file"
    UNREADABLE = "cannot read"
    TOO_LARGE = "too large"


class FileRefused(Exception):
    """Why `path` cannot be read: `refusal` says what kind of problem, `detail` adds the OS's words
    (UNREADABLE) or the size found (TOO_LARGE)."""

    def __init__(self, path: Path, refusal: Refusal, detail: str = "", size: int | None = None) -> None:
        self.path, self.refusal, self.detail, self.size = path, refusal, detail, size
        super().__init__(f"{path}: {refusal.value}" + (f" ({detail})" if detail else ""))


def refusal_message(refused: FileRefused, **words: str) -> str:
    """The one-line message for `refused`: the caller's own words for some refusals, given by the
    Refusal's name in lower case as format strings with {path} and {size}, else str(refused).

    refusal_message(refused, directory="{path}: is a directory, expected a spec")
    """
    template = words.get(refused.refusal.name.lower())
    return template.format(path=refused.path, size=refused.size) if template else str(refused)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file (symlinks followed).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer, and the type
    is checked on the opened descriptor, so nothing can be swapped in between check and read.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileRefused(path, Refusal.MISSING) from None
    except IsADirectoryError:
        raise FileRefused(path, Refusal.DIRECTORY) from None
    except OSError as error:
        raise FileRefused(path, Refusal.UNREADABLE, error.strerror or type(error).__name__) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise FileRefused(path, Refusal.DIRECTORY)
        if not stat.S_ISREG(mode):
            raise FileRefused(path, Refusal.SPECIAL)
        os.set_blocking(fd, True)  # no effect on a regular file's reads; say what we mean anyway
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of `path`, a regular file of at most `max_bytes` (checked before and while reading:
    the file may grow in between). Raises FileRefused."""
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise FileRefused(Path(path), Refusal.TOO_LARGE, size=size)
        try:
            data = file.read(max_bytes + 1)
        except OSError as error:
            raise FileRefused(Path(path), Refusal.UNREADABLE, error.strerror or type(error).__name__) from None
    if len(data) > max_bytes:
        raise FileRefused(Path(path), Refusal.TOO_LARGE, size=len(data))
    return data


def check_regular(path: str | os.PathLike[str]) -> None:
    """Raise FileRefused unless `path` is a regular file this process can open for reading."""
    open_regular(path).close()
