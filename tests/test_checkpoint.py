"""The checkpoint format: atomic durable saves, stale temp files, safe one-line load errors."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from gptexp import checkpoint
from gptexp.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files, save_checkpoint


def state(step: int = 7) -> dict:
    return {"step": step, "model": {"w": torch.arange(6.0).reshape(2, 3)}}


def test_round_trip_adds_the_header(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint(state(), path)
    loaded = load_checkpoint(path)
    assert loaded["format"] == checkpoint.FORMAT and loaded["version"] == checkpoint.VERSION
    assert loaded["step"] == 7 and torch.equal(loaded["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left


def test_truncated_checkpoint_is_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content", [
    {"model": {}, "step": 1},  # a torch file without the header
    {"format": "gptexp-checkpoint", "version": 99, "model": {}, "step": 1},
    {"format": "gptexp-checkpoint", "version": 1, "step": 1},  # no weights
    [1, 2, 3],
])
def test_foreign_or_future_checkpoints_are_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "x.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


class Payload:
    def __reduce__(self):  # what a malicious pickle does: run code on load
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_not_run_and_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "step": 1, "model": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))  # not even a torch zip file
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(CheckpointError, load_checkpoint, fifo).value))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "load_checkpoint blocked on a FIFO"
    assert "not a regular file" in str(outcome[0])


def test_save_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def spy_fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def spy_replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    save_checkpoint(state(), tmp_path / "last.pt")
    assert events == ["fsync-file", "rename", "fsync-dir"]


def test_stale_temp_files_are_removed_by_the_next_save(tmp_path: Path) -> None:
    stale = [tmp_path / ".last.pt.4242.tmp", tmp_path / ".best.pt.17.tmp"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)  # what a writer killed mid-save leaves
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    save_checkpoint(state(), tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "notes.txt"]
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_failed_save_leaves_the_old_checkpoint_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(state(1), path)
    with pytest.raises(Exception):
        save_checkpoint({"step": 2, "model": {"f": lambda: 0}}, path)  # cannot be pickled
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
