"""Progress of data preparation: a rich bar (MB/s, ETA) on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Callable

Message = Callable[[str], None]


class ByteProgress:
    """Counts bytes of one phase ("encoding", "counting chunks"); use as a context manager."""

    def __init__(self, description: str, total_bytes: int, message: Message, tty: bool | None = None,
                 every_s: float = 10.0) -> None:
        self.description = description
        self.total = max(total_bytes, 1)
        self.message = message
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.every_s = every_s
        self.done = 0
        self._bar = None
        self._started = time.monotonic()
        self._last_line = self._started

    def __enter__(self) -> ByteProgress:
        if self.tty:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        else:
            self.message(f"{self.description}: {self.total / 1e6:,.1f} MB")
        return self

    def advance(self, n_bytes: int) -> None:
        self.done += n_bytes
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self._last_line >= self.every_s:
            self._last_line = now
            rate = self.done / max(now - self._started, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            self.message(f"{self.description}: {100 * self.done / self.total:.0f}% "
                         f"({self.done / 1e6:,.1f} of {self.total / 1e6:,.1f} MB, {rate / 1e6:.1f} MB/s, ETA {eta:.0f} s)")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        elapsed = time.monotonic() - self._started
        if exc[0] is None:
            self.message(f"{self.description}: done, {self.done / 1e6:,.1f} MB in {elapsed:.1f} s "
                         f"({self.done / 1e6 / max(elapsed, 1e-9):.1f} MB/s)")
