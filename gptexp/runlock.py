"""One writer per run: OS file locks in the run directory.

A launcher (`gptexp run`, `run --resume`) takes an exclusive `flock` on one lock slot of its run
before it writes anything and keeps it for its whole life; the kernel releases it when the process
exits, however it dies (SIGKILL included), so a lock is never stale on a local filesystem. A run
of `launch.nnodes` nodes has that many slots (`.lock-0` … `.lock-<n-1>`): every node's launcher
takes one, and a launcher that finds every slot taken exits 2 naming the holder.

The trainer's rank 0 also holds `.lock-writer` while it lives, because torchrun's workers can
outlive a killed launcher by a step (they notice the launcher is gone, checkpoint, and stop).

Each lock file holds its owner as JSON (pid, host, since) for the error message; the lock itself,
not that text, is the truth. Guarantees on shared filesystems are in the README ("What gptexp
guarantees"): on NFS, Linux implements flock with NFS byte-range locks (lockd / NFSv4), so locks
work across hosts there; a filesystem without lock support fails the lock and the launcher exits 2
rather than run unlocked.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from gptexp import contract as C

WRITER_SLOT = "writer"


class RunInUse(RuntimeError):
    """Another live process owns the run; the message says which (pid and host)."""


@dataclass
class RunLock:
    """A held lock slot; `release()` (or process exit) frees it."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = -1


def lock_path(run_dir: Path, slot: int | str) -> Path:
    return run_dir / f"{C.LOCK_PREFIX}-{slot}"


def lock_files(run_dir: Path) -> list[Path]:
    try:
        return sorted(p for p in run_dir.glob(f"{C.LOCK_PREFIX}-*") if p.is_file())
    except OSError:
        return []


def owner_of(path: Path) -> str:
    """'pid N on host H' as recorded in a lock file (best effort: for messages only)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {int(owner['pid'])} on host {str(owner['host'])[:100]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _try_lock(path: Path, exclusive: bool, attempts: int = 5) -> int | None:
    """An fd holding the lock on `path`, or None when another process holds it.

    A few quick retries: `run_is_locked` (gptexp runs, report) probes locks for an instant, and
    such a probe must not make a launcher believe the run is taken.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            return fd
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunInUse(f"{path}: this filesystem does not support file locks ({error.strerror}); "
                               "keep run directories on a filesystem that does") from None
            if attempt < attempts - 1:
                time.sleep(0.05)
    os.close(fd)
    return None


def _record_owner(fd: int) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(owner) + "\n").encode(), 0)


def acquire(run_dir: Path, slots: int = 1) -> RunLock:
    """Take a free launcher slot of the run, or raise RunInUse naming who holds it.

    A run whose launcher is gone but whose trainer still lives (it finishes its step, then
    checkpoints and stops) is in use too.
    """
    for slot in range(slots):
        path = lock_path(run_dir, slot)
        fd = _try_lock(path, exclusive=True)
        if fd is None:
            continue
        writer = lock_path(run_dir, WRITER_SLOT)
        if writer.exists() and _probe(writer):
            os.close(fd)
            raise RunInUse(f"run {run_dir.name} is in use by {owner_of(writer)} (its trainer is still running)")
        _record_owner(fd)
        return RunLock(path, fd)
    raise RunInUse(f"run {run_dir.name} is in use by {owner_of(lock_path(run_dir, 0))}")


def acquire_writer(run_dir: Path) -> RunLock | None:
    """Rank 0's lock, held while the trainer lives; None if the filesystem refuses locks."""
    path = lock_path(run_dir, WRITER_SLOT)
    try:
        fd = _try_lock(path, exclusive=True)
    except RunInUse:
        return None
    if fd is None:
        raise RunInUse(f"run {run_dir.name} is in use by {owner_of(path)} (another trainer writes it)")
    _record_owner(fd)
    return RunLock(path, fd)


def writer_is_locked(run_dir: Path) -> bool:
    """Whether a live trainer (rank 0) holds the run's writer lock."""
    return _probe(lock_path(run_dir, WRITER_SLOT))


def run_is_locked(run_dir: Path) -> bool:
    """Whether a live process holds any lock of the run (read-only check: probes, then lets go)."""
    return any(_probe(path) for path in lock_files(run_dir))


def _probe(path: Path) -> bool:
    """Whether another open file holds an exclusive lock on `path` (this process's own count too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
