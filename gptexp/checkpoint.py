"""The checkpoint file format: atomic, durable saves and safe, checked loads.

A checkpoint is a `torch.save`d dict of tensors and plain containers with two header fields,
`format` ("gptexp-checkpoint") and `version`. Saving writes a temp file in the target directory,
fsyncs it, renames it over the target and fsyncs the directory, so after a crash (SIGKILL, power
cut) the target is either the old complete file or the new complete file, never half of one.
Temp files a killed writer left behind are removed before the next save (and on resume).
Loading uses `weights_only=True` (no pickled code runs) and turns every failure into one
`CheckpointError` whose message names the file.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

FORMAT = "gptexp-checkpoint"
VERSION = 1
_TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line that names the file."""


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{_TEMP_SUFFIX}")


def is_temp_file(path: Path, target_name: str | None = None) -> bool:
    """Whether `path` is a temp file of a checkpoint save (of `target_name`, or of any)."""
    name = path.name
    if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX)):
        return False
    return target_name is None or name.startswith(f".{target_name}.")


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (the directory entry itself is data)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Delete temp files left by writers that died mid-save; returns what was removed.

    Only the run's single writer calls this (the run lock guarantees there is one), so no temp
    file here can belong to a save in progress.
    """
    if not directory.is_dir():
        return []
    removed = []
    for entry in directory.iterdir():
        if is_temp_file(entry) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


class _WriteErrorKeeper:
    """A file wrapper that remembers the OSError of a failed write (a full disk, a quota)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` (a dict; header fields are added) to `path` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            writer = _WriteErrorKeeper(f)
            try:
                torch.save({"format": FORMAT, "version": VERSION, **state}, writer)
            except RuntimeError:
                if writer.error is not None:  # torch's zip writer hides ENOSPC behind "unexpected pos"
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a gptexp checkpoint safely (weights_only: tensors and plain containers only)."""
    try:
        if not path.is_file():
            raise CheckpointError(f"{path}: not a regular file")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain containers "
                              "(loaded with weights_only=True, so no code in it ran)") from None
    except Exception as error:  # noqa: BLE001 - torch.load fails in many types; all mean "not loadable"
        # torch.load's messages (truncated zip, bad magic number, ...) can be multi-line; the first
        # line says enough.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: cannot load checkpoint ({first_line[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gptexp checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')!r}, this gptexp reads version {VERSION}")
    if not isinstance(state.get("model"), dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: checkpoint lacks its model weights or step")
    return state
