"""regular_file: the one place that opens files named by users or by old runs."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gptexp.regular_file import FileRefused, Refusal, check_regular, open_regular, read_regular, refusal_message


def refusal(call, *args) -> FileRefused:
    with pytest.raises(FileRefused) as info:
        call(*args)
    return info.value


def test_a_regular_file_and_a_symlink_to_it_are_read(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"caf\xc3\xa9\n")
    (tmp_path / "link").symlink_to(target)
    assert read_regular(target, 6) == b"caf\xc3\xa9\n"
    assert read_regular(tmp_path / "link", 100) == b"caf\xc3\xa9\n"
    with open_regular(target) as file:
        assert file.read() == b"caf\xc3\xa9\n"
    check_regular(target)


def test_each_kind_of_refusal_is_named(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 11)
    assert refusal(read_regular, tmp_path / "missing", 10).refusal is Refusal.MISSING
    assert refusal(read_regular, tmp_path, 10).refusal is Refusal.DIRECTORY
    assert refusal(check_regular, "/dev/zero").refusal is Refusal.SPECIAL
    too_large = refusal(read_regular, tmp_path / "big", 10)
    assert (too_large.refusal, too_large.size) == (Refusal.TOO_LARGE, 11)
    assert str(too_large) == f"{tmp_path / 'big'}: too large"
    assert str(refusal(read_regular, tmp_path / "missing", 10)) == f"{tmp_path / 'missing'}: file not found"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert refusal(check_regular, dangling).refusal is Refusal.MISSING


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(refusal(read_regular, fifo, 10).refusal), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert outcome == [Refusal.SPECIAL]  # a plain open() would still be waiting for a writer


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_why(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    refused = refusal(check_regular, secret)
    assert refused.refusal is Refusal.UNREADABLE and "Permission denied" in str(refused)


def test_callers_word_some_refusals_their_own_way(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 11)
    too_large = refusal(read_regular, tmp_path / "big", 10)
    assert refusal_message(too_large, too_large="{path}: {size} bytes") == f"{tmp_path / 'big'}: 11 bytes"
    assert refusal_message(too_large, directory="never used") == f"{tmp_path / 'big'}: too large"
    directory = refusal(check_regular, tmp_path)
    assert refusal_message(directory, directory="{path} is a folder") == f"{tmp_path} is a folder"
